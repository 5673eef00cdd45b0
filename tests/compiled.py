"""The compiled kernels for tests that compare them with their twins."""

from __future__ import annotations

import os
from types import ModuleType

import pytest

compiled: ModuleType | None
try:
    from serving import _kernels as compiled
except ImportError:  # only the pure-Python run may lack the build; elsewhere it must fail loudly
    if not os.environ.get("SERVING_PUREPYTHON"):
        raise
    compiled = None

needs_compiled = pytest.mark.skipif(compiled is None, reason="serving._kernels is not built")


def impls(reference: ModuleType) -> list[object]:
    """pytest params: the compiled module (skipped when unbuilt) and the given twin."""
    return [
        pytest.param(compiled, id="compiled", marks=needs_compiled),
        pytest.param(reference, id="reference"),
    ]
