"""Check that an ONNX model answers as the scikit-learn estimator it came from."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_parity(
    estimator: Any, onnx_bytes: bytes, x: np.ndarray, input_name: str, atol: float = 1e-4
) -> dict[str, Any]:
    """Run both on `x`: labels must agree, probabilities / values within `atol`."""
    import onnxruntime as ort

    from serving.packaging.convert import is_classifier

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {input_name: x})
    names = [o.name for o in sess.get_outputs()]
    report: dict[str, Any] = {"rows": len(x), "tolerance": atol}
    if is_classifier(estimator):
        want_labels = estimator.predict(x)
        got_labels = outs[names.index("label")]
        agree = float(np.mean(np.asarray(got_labels) == np.asarray(want_labels)))
        want_p = estimator.predict_proba(x)
        got_p = outs[names.index("probabilities")]
        diff = float(np.max(np.abs(np.asarray(got_p, np.float64) - want_p))) if len(x) else 0.0
        report.update(label_agreement=agree, max_abs_diff=diff)
        report["passed"] = agree == 1.0 and diff <= atol
    else:
        want = np.asarray(estimator.predict(x), np.float64).reshape(len(x), -1)
        got = np.asarray(outs[0], np.float64).reshape(len(x), -1)
        scale = max(1.0, float(np.max(np.abs(want)))) if len(x) else 1.0
        diff = float(np.max(np.abs(got - want))) if len(x) else 0.0
        report.update(max_abs_diff=diff, relative_to=scale)
        report["passed"] = diff <= atol * scale
    return report
