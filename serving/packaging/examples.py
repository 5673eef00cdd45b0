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
    build: Callable[[], tuple[Any, Any, list[str], list[str]]]  # est, X, labels, features
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


def tabular_frame() -> tuple[Any, np.ndarray]:
    """The tabular example's data: wine's measurements (FP32) and two text columns derived
    from them, so the model has numeric and categorical inputs; and the class of each row."""
    import pandas as pd
    from sklearn.datasets import load_wine

    data = load_wine(as_frame=True)
    src = data.frame
    df = pd.DataFrame({
        "alcohol": src["alcohol"].astype(np.float32),
        "malic_acid": src["malic_acid"].astype(np.float32),
        "flavanoids": src["flavanoids"].astype(np.float32),
        "color_intensity": src["color_intensity"].astype(np.float32),
        "proline": src["proline"].astype(np.int64),
        "hue": pd.cut(src["hue"], [0, 0.8, 1.0, 10], labels=["brown", "amber", "straw"])
        .astype(str).astype(object),
        "ash_grade": np.where(src["ash"] > 2.4, "high", "low").astype(object),
    })
    return df, data.target.to_numpy()


def _tabular() -> tuple[Any, Any, list[str], list[str]]:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    df, y = tabular_frame()
    numeric = ["alcohol", "malic_acid", "flavanoids", "color_intensity", "proline"]
    pre = ColumnTransformer([
        ("num", StandardScaler(), numeric),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["hue", "ash_grade"]),
    ])
    est = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=1000, random_state=0))])
    est.fit(df, y)
    return est, df, ["class_0", "class_1", "class_2"], list(df.columns)


EXAMPLES: tuple[Example, ...] = (
    Example("iris", "LogisticRegression on iris (4 features, 3 classes)", _iris),
    Example("forest", "RandomForest, 100 trees, on breast cancer (30 features)", _forest),
    Example("digits", "MLP 64x256x256x10 on digits (8x8 images scaled to 0..1)", _digits_mlp),
    Example("diabetes", "Ridge regression on diabetes (10 features)", _diabetes),
    Example("tabular", "DataFrame pipeline on wine: 5 numeric and 2 text columns, one input "
            "each (scaler + one-hot + LogisticRegression)", _tabular,
            # a cheap pipeline: ONNX Runtime's fixed cost per call outweighs its cost per row
            # (33 us for 64 rows, 112 us for 512), so multi-row requests batch together
            max_batch_size=512),
)


def build_example(example: Example) -> tuple[Manifest, bytes]:
    """Train, convert and parity-check one example; its manifest and ONNX bytes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter: the examples are fixed-seed demos
        est, x, labels, feature_names = example.build()
    source = {"kind": "example", "description": example.description}
    if isinstance(x, np.ndarray):
        manifest, onnx_bytes = build_from_estimator(
            example.name, est, x, labels=tuple(labels), feature_names=feature_names,
            source=source)
    else:  # a DataFrame: one input per column
        from serving.packaging.tabular import build_from_frame

        manifest, onnx_bytes = build_from_frame(
            example.name, est, x, labels=tuple(labels), source=source, data_source="wine")
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
