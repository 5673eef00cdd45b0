"""A compact profile of the reference data, kept in the manifest for drift monitoring.

Per numeric feature: its range, NaN share, and about ten quantile bins with the reference's
share in each; per output: class shares (labels) or quantile bins (numbers).

A model with one input per column (packaged from a DataFrame) has this reference:

    {"rows": N,
     "layout": "columns",            # absent for a one-matrix model, whose "input" names it
     "input": "",                    # no single input: a reader keyed on "input" finds nothing
     "features": [                   # numeric columns, the same entries as a matrix model's,
       {"name": "age", "input": "age", "min": .., "max": .., "nan_share": ..,
        "edges": [..], "shares": [..]}],      # plus "input": the ONNX input holding the column
     "categorical": [                # string (BYTES) columns
       {"name": "colour", "input": "colour",
        "categories": ["blue", "rose", ...],  # the most frequent, at most MAX_CATEGORIES, sorted
        "shares": [0.4, 0.35, ...],           # each category's share of the rows
        "other_share": 0.0,                   # rows in categories beyond the list
        "missing_share": 0.0}],               # rows with an empty string (missing text)
     "outputs": {...}}               # as for a matrix model
"""

from __future__ import annotations

from typing import Any

import numpy as np

BINS = 10
MAX_CATEGORIES = 50


def _bins(values: np.ndarray) -> tuple[list[float], list[float]]:
    """Interior quantile edges (deduplicated) and the reference's share in each bin."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [], [1.0]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
    return edges.tolist(), (counts / counts.sum()).tolist()


def profile_reference(
    x: np.ndarray,
    outputs: dict[str, np.ndarray],
    feature_names: list[str] | None = None,
    input_name: str = "input",
) -> dict[str, Any]:
    """The profile of a 2-D reference table `x` and the model's outputs on it."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError("reference data must be a 2-D table")
    names = feature_names or [f"f{i}" for i in range(x.shape[1])]
    if len(names) != x.shape[1]:
        raise ValueError(f"{len(names)} feature names for {x.shape[1]} features")
    features = [_numeric(str(name), x[:, i]) for i, name in enumerate(names)]
    return {"rows": len(x), "input": input_name, "features": features,
            "outputs": _outputs(outputs)}


def _numeric(name: str, col: np.ndarray) -> dict[str, Any]:
    finite = col[np.isfinite(col)]
    edges, shares = _bins(col)
    return {
        "name": name,
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "nan_share": float(np.mean(~np.isfinite(col))) if col.size else 0.0,
        "edges": edges,
        "shares": shares,
    }


def _categorical(name: str, col: np.ndarray) -> dict[str, Any]:
    values = np.asarray([str(v) for v in col.ravel()], dtype=object)
    n = max(len(values), 1)
    present = values[values != ""]
    cats, counts = np.unique(present.astype(str), return_counts=True)
    top = np.argsort(-counts, kind="stable")[:MAX_CATEGORIES]
    keep = np.sort(top)
    return {
        "name": name,
        "input": name,
        "categories": cats[keep].tolist(),
        "shares": (counts[keep] / n).tolist(),
        "other_share": float(counts.sum() - counts[keep].sum()) / n,
        "missing_share": float(len(values) - len(present)) / n,
    }


def profile_columns(
    fed: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The profile of a per-column model's reference rows (`fed`: one array per input)."""
    features, categorical = [], []
    for name, arr in fed.items():
        if arr.dtype.kind in "iuf":
            features.append({**_numeric(name, np.asarray(arr, np.float64).ravel()), "input": name})
        else:
            categorical.append(_categorical(name, arr))
    rows = len(next(iter(fed.values()))) if fed else 0
    return {"rows": rows, "layout": "columns", "input": "", "features": features,
            "categorical": categorical, "outputs": _outputs(outputs)}


def _outputs(outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    outs: dict[str, Any] = {}
    for name, arr in outputs.items():
        arr = np.asarray(arr)
        if arr.dtype.kind in "iub" and arr.ndim == 1:
            classes, counts = np.unique(arr, return_counts=True)
            outs[name] = {"kind": "classes", "classes": classes.tolist(),
                          "shares": (counts / counts.sum()).tolist()}
        elif arr.dtype.kind == "f" and (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1)):
            edges, shares = _bins(arr.astype(np.float64).ravel())
            outs[name] = {"kind": "numeric", "edges": edges, "shares": shares}
    return outs


def reference_profile(
    onnx_bytes: bytes, x: np.ndarray, feature_names: list[str] | None
) -> dict[str, Any]:
    """The drift reference: rows `x` and what the ONNX model answers on them.

    The model must take one 2-D input of `x`'s width (what a profile of features describes).
    """
    import onnxruntime as ort

    from serving.protocol.datatypes import NUMPY_DTYPES, from_onnx

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    shape = inputs[0].shape if len(inputs) == 1 else None
    if shape is None or len(shape) != 2:
        raise ValueError("a reference profile needs a model with one 2-D input")
    width = shape[1]
    if isinstance(width, int) and width != x.shape[1]:
        raise ValueError(f"sample data has {x.shape[1]} columns but the model takes {width}")
    dtype = NUMPY_DTYPES[from_onnx(inputs[0].type)]
    if dtype.kind not in "iuf":
        raise ValueError(f"a reference profile needs a numeric input, not {inputs[0].type}")
    outs = sess.run(None, {inputs[0].name: np.ascontiguousarray(x, dtype)})
    named = {o.name: v for o, v in zip(sess.get_outputs(), outs, strict=True)}
    return profile_reference(x, named, feature_names, input_name=inputs[0].name)


def reference_profile_columns(onnx_bytes: bytes, fed: dict[str, np.ndarray]) -> dict[str, Any]:
    """The drift reference of a per-column model: its inputs `fed` and its answers on them."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    outs = sess.run(None, fed)
    named = {o.name: v for o, v in zip(sess.get_outputs(), outs, strict=True)}
    return profile_columns(fed, named)
