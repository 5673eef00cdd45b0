"""Check that an ONNX model answers as the estimator it came from (or as given outputs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def check_parity(
    estimator: Any, onnx_bytes: bytes, x: np.ndarray, input_name: str, atol: float = 1e-4
) -> dict[str, Any]:
    """Run both on `x`: labels must agree, probabilities / values within `atol`."""
    return check_parity_feeds(estimator, onnx_bytes, {input_name: x}, x, atol)


def _run(onnx_bytes: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    outs = sess.run(None, feeds)
    return {o.name: np.asarray(v) for o, v in zip(sess.get_outputs(), outs, strict=True)}


def check_parity_feeds(
    estimator: Any, onnx_bytes: bytes, feeds: dict[str, np.ndarray], x: Any, atol: float = 1e-4
) -> dict[str, Any]:
    """The ONNX model on `feeds` against the estimator on `x` (the same rows: an array or a
    DataFrame as the estimator was fit on)."""
    from serving.packaging.convert import final_step, is_classifier

    got = _run(onnx_bytes, feeds)
    n = len(x)
    if is_classifier(final_step(estimator)):
        return compare(got, {"label": np.asarray(estimator.predict(x)).ravel(),
                             "probabilities": np.asarray(estimator.predict_proba(x))}, n, atol)
    return compare(got, {"": np.asarray(estimator.predict(x))}, n, atol)


def compare(
    got: dict[str, np.ndarray], want: dict[str, np.ndarray], n: int, atol: float
) -> dict[str, Any]:
    """Labels must agree exactly; probabilities within `atol`; values within `atol` times their
    scale (at least 1). The key "" stands for the model's first output."""
    report: dict[str, Any] = {"rows": n, "tolerance": atol}
    first = next(iter(got))
    if "label" in want and "probabilities" in want:
        got_labels = np.asarray(got["label"]).ravel()
        want_labels = want["label"]
        if got_labels.dtype.kind != want_labels.dtype.kind:  # e.g. int64 vs numpy str classes
            got_labels, want_labels = got_labels.astype(str), want_labels.astype(str)
        agree = float(np.mean(got_labels == want_labels)) if n else 1.0
        got_p = np.asarray(got["probabilities"], np.float64)
        diff = float(np.max(np.abs(got_p - want["probabilities"]))) if n else 0.0
        report.update(label_agreement=agree, max_abs_diff=diff)
        report["passed"] = agree == 1.0 and diff <= atol
        return report
    name, values = next(iter(want.items()))
    want_v = np.asarray(values, np.float64).reshape(n, -1)
    got_v = np.asarray(got[name or first], np.float64).reshape(n, -1)
    scale = max(1.0, float(np.max(np.abs(want_v)))) if n else 1.0
    diff = float(np.max(np.abs(got_v - want_v))) if n else 0.0
    report.update(max_abs_diff=diff, relative_to=scale)
    report["passed"] = diff <= atol * scale
    return report


def check_expected(
    onnx_bytes: bytes, feeds: dict[str, np.ndarray], expected: np.ndarray, atol: float = 1e-4
) -> dict[str, Any]:
    """An ONNX file against outputs the user gives: integer expectations are compared with the
    `label` output (or the first), numbers with the `probabilities` output (or the first)."""
    got = _run(onnx_bytes, feeds)
    n = len(next(iter(feeds.values())))
    if len(expected) != n:
        raise ValueError(f"expected outputs have {len(expected)} rows, the sample data {n}")
    if expected.dtype.kind in "iuOUS" and "label" in got:
        labels = np.asarray(got["label"]).ravel()
        agree = float(np.mean(labels.astype(str) == expected.ravel().astype(str)))
        return {"rows": n, "tolerance": atol, "label_agreement": agree, "max_abs_diff": 0.0,
                "passed": agree == 1.0}
    name = "probabilities" if "probabilities" in got and expected.ndim == 2 else ""
    return compare(got, {name: expected}, n, atol)


def load_expected(path: Path) -> np.ndarray:
    """Expected outputs: a .npy array (labels, values or probabilities) or a .csv of numbers."""
    try:
        if path.suffix == ".npy":
            return np.asarray(np.load(path, allow_pickle=False))
        if path.suffix == ".csv":
            arr = np.loadtxt(path, delimiter=",", ndmin=2)
            return arr[:, 0] if arr.shape[1] == 1 else arr
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read expected outputs {path.name}: {exc}") from None
    raise ValueError(f"expected outputs {path.name}: use a .npy or .csv file")
