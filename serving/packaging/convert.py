"""Convert a scikit-learn estimator to ONNX with plain tensor outputs (no ZipMap)."""

from __future__ import annotations

from typing import Any


def is_classifier(estimator: Any) -> bool:
    from sklearn.base import is_classifier as _is_classifier

    return bool(_is_classifier(estimator))


def to_onnx(
    estimator: Any, n_features: int, datatype: str = "FP32", input_name: str = "input"
) -> Any:
    """ONNX with one `input` [-1, n_features]; classifiers output `label` and `probabilities`."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    tensor_type = FloatTensorType if datatype == "FP32" else DoubleTensorType
    options = {"zipmap": False} if is_classifier(estimator) else None
    onx = convert_sklearn(
        estimator,
        initial_types=[(input_name, tensor_type([None, n_features]))],
        options={id(estimator): options} if options else None,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return onx
