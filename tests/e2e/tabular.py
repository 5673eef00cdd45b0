"""A DataFrame pipeline (numeric and string columns) converted to ONNX with one input per
column, as tabular teams ship it; published into a test registry with a reference profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serving.packaging.describe import make_manifest
from serving.packaging.publish import publish_version

COLOURS = ("red", "green", "blue", "ochre")


def frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """Rows of the tabular example: age INT64, income FP32, colour and city strings."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.integers(18, 80, rows).astype(np.int64),
        "income": rng.normal(50, 12, rows).astype(np.float32),
        "colour": rng.choice(COLOURS, rows, p=[0.4, 0.3, 0.2, 0.1]).astype(object),
        "city": rng.choice(["paris", "lyon", "nantes"], rows).astype(object),
    })


def fit_pipeline(kind: str = "logistic") -> Any:
    """A ColumnTransformer (one-hot strings, scaled numbers) and a classifier, fitted."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    df = frame(600)
    y = ((df["age"] > 45) ^ (df["colour"] == "red") | (df["city"] == "lyon")).astype(np.int64)
    pre = ColumnTransformer([
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["colour", "city"]),
        ("num", StandardScaler(), ["age", "income"]),
    ])
    clf = (LogisticRegression(max_iter=500) if kind == "logistic"
           else HistGradientBoostingClassifier(max_iter=20, random_state=0))
    return Pipeline([("pre", pre), ("clf", clf)]).fit(df, y)


def to_onnx_bytes(pipe: Any) -> bytes:
    """skl2onnx from a DataFrame sample: one input per column, strings as STRING tensors."""
    import warnings

    from skl2onnx import to_onnx

    # skl2onnx builds tree attributes from numpy integers, which onnx's helper accepts with a
    # DeprecationWarning (an error under this suite's filterwarnings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = to_onnx(pipe, X=frame(5), options={"zipmap": False},
                        target_opset={"": 17, "ai.onnx.ml": 3})
    return bytes(model.SerializeToString())


def reference(df: pd.DataFrame) -> dict[str, Any]:
    """A reference profile: numeric columns as the packager profiles them, string columns as a
    list of `{"name", "input", "categories", "shares"}`."""
    from serving.packaging.profile import profile_reference

    numeric = [c for c in df.columns if df[c].dtype.kind in "fiu"]
    prof = profile_reference(df[numeric].to_numpy(np.float64), {}, numeric, input_name="")
    cats: list[dict[str, Any]] = []
    for c in df.columns:
        if c in numeric:
            continue
        shares = df[c].value_counts(normalize=True).sort_index()
        cats.append({"name": c, "input": c, "categories": [str(k) for k in shares.index],
                     "shares": [float(s) for s in shares.to_numpy()]})
    prof["categorical"] = cats
    return prof


def publish_tabular(
    registry: Path, name: str, pipe: Any, model_toml: str | None = None,
    with_reference: bool = False,
) -> int:
    onnx_bytes = to_onnx_bytes(pipe)
    ref = reference(frame(2000, seed=1)) if with_reference else None
    manifest = make_manifest(name, onnx_bytes, reference=ref)
    return publish_version(registry, manifest, onnx_bytes, model_toml)
