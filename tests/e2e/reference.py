"""The scikit-learn estimators behind the example models, rebuilt for comparison (fixed seeds)."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np

from serving.packaging import examples


@functools.cache
def estimator(name: str) -> tuple[Any, np.ndarray]:
    """(fitted estimator, float32 X) exactly as `serving examples` built them."""
    build = {e.name: e.build for e in examples.EXAMPLES}[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est, x, *_ = build()
    return est, x
