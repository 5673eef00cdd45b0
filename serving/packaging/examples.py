"""Example models, built deterministically from scikit-learn's bundled datasets (no downloads)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.packaging.package import MODEL_TOML, PackageError, build_from_estimator, publish
from serving.registry.manifest import Manifest

__all__ = [
    "EXAMPLES", "MODEL_TOML", "Example", "build_example", "build_examples", "publish_worse",
]


@dataclass(frozen=True)
class Example:
    name: str
    description: str
    build: Callable[[], tuple[Any, np.ndarray, list[str], list[str]]]  # est, X, labels, features
    max_batch_size: int = 64


def _iris() -> tuple[Any, np.ndarray, list[str], list[str]]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    x = data.data.astype(np.float32)
    est = LogisticRegression(max_iter=1000, random_state=0).fit(x, data.target)
    return est, x, [str(n) for n in data.target_names], [str(f) for f in data.feature_names]


def _forest() -> tuple[Any, np.ndarray, list[str], list[str]]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    est = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0, n_jobs=1)
    est.fit(x, data.target)
    return est, x, [str(n) for n in data.target_names], [str(f) for f in data.feature_names]


def _digits_mlp() -> tuple[Any, np.ndarray, list[str], list[str]]:
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    est = MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=60, random_state=0)
    est.fit(x, data.target)
    return est, x, [str(n) for n in data.target_names], [str(f) for f in data.feature_names]


def _diabetes() -> tuple[Any, np.ndarray, list[str], list[str]]:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    data = load_diabetes()
    x = data.data.astype(np.float32)
    est = Ridge(alpha=0.1).fit(x, data.target)
    return est, x, [], [str(f) for f in data.feature_names]


EXAMPLES: tuple[Example, ...] = (
    Example("iris", "LogisticRegression on iris (4 features, 3 classes)", _iris),
    Example("forest", "RandomForest, 100 trees, on breast cancer (30 features)", _forest),
    Example("digits", "MLP 64x256x256x10 on digits (8x8 images scaled to 0..1)", _digits_mlp),
    Example("diabetes", "Ridge regression on diabetes (10 features)", _diabetes),
)


def build_example(example: Example) -> tuple[Manifest, bytes]:
    """Train, convert and parity-check one example; its manifest and ONNX bytes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter: the examples are fixed-seed demos
        est, x, labels, feature_names = example.build()
    manifest, onnx_bytes = build_from_estimator(
        example.name, est, x, labels=tuple(labels), feature_names=feature_names,
        source={"kind": "example", "description": example.description})
    if not manifest.parity["passed"]:
        raise PackageError(f"example {example.name} failed parity: {manifest.parity}")
    return manifest, onnx_bytes


def build_examples(registry: Path | str, only_missing: bool = True,
                   log: Callable[[str], None] = print) -> list[str]:
    """Build every example model into `registry`; with only_missing, skip models already there."""
    from serving.registry.store import open_registry

    view = open_registry(registry)
    built = []
    for example in EXAMPLES:
        if only_missing and view.versions(example.name):
            continue
        manifest, onnx_bytes = build_example(example)
        version = publish(registry, manifest, onnx_bytes, example.max_batch_size)
        parity = manifest.parity
        log(
            f"built {example.name} v{version}: {example.description}; parity on "
            f"{parity['rows']} rows, max abs diff {parity['max_abs_diff']:.2e}"
        )
        built.append(example.name)
    return built


def publish_worse(registry: Path | str, name: str) -> int:
    """A deliberately worse version of an example (iris: a heavily regularised model whose
    labels often disagree with the good one), for trying rollouts and rollbacks."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    if name != "iris":
        raise ValueError("only iris has a worse twin")
    data = load_iris()
    x = data.data.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = LogisticRegression(C=1e-3, max_iter=1000).fit(x, data.target)
    manifest, onnx_bytes = build_from_estimator(
        name, est, x, labels=tuple(str(n) for n in data.target_names),
        feature_names=[str(f) for f in data.feature_names],
        source={"kind": "example", "description": "deliberately worse: LogisticRegression C=1e-3"})
    return publish(registry, manifest, onnx_bytes)
