"""Convert a scikit-learn estimator to ONNX with plain tensor outputs (no ZipMap).

Two input layouts: one `input` matrix [-1, n_features] (an estimator fit on an array), or one
input [-1, 1] per column, named after it (an estimator fit on a pandas DataFrame).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
# What each library needs for its converter (an optional extra of this package).
_EXTRAS = {"xgboost": "xgboost", "lightgbm": "lightgbm", "catboost": "catboost"}


class UnsupportedModel(ValueError):
    """The estimator (or one of its steps) has no ONNX converter: the message says the way out."""


def is_classifier(estimator: Any) -> bool:
    from sklearn.base import is_classifier as _is_classifier

    if type(estimator).__name__ == "CatBoostClassifier":
        return True
    return bool(_is_classifier(estimator))


def final_step(estimator: Any) -> Any:
    """The estimator at the end of a Pipeline (the estimator itself otherwise)."""
    while hasattr(estimator, "steps"):
        estimator = estimator.steps[-1][1]
    return estimator


def _children(step: Any) -> Iterator[tuple[str, Any]]:
    if hasattr(step, "steps"):
        yield from ((str(n), s) for n, s in step.steps)
    elif hasattr(step, "transformers_"):
        yield from ((str(n), s) for n, s, _cols in step.transformers_)
    elif hasattr(step, "transformer_list"):
        yield from ((str(n), s) for n, s in step.transformer_list)


def walk(estimator: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every step of a (nested) Pipeline / ColumnTransformer / FeatureUnion, with its path."""
    yield path or "model", estimator
    for name, child in _children(estimator):
        if isinstance(child, str):  # "passthrough" / "drop"
            continue
        yield from walk(child, f"{path}/{name}" if path else name)


def _way_out() -> str:
    return (
        "convert it yourself (e.g. with onnxmltools or the library's own exporter) and package "
        "the .onnx file (`serving package model.onnx --sample-data data.csv "
        "--expected-outputs expected.npy` checks it against your outputs)"
    )


def check_supported(estimator: Any) -> None:
    """Refuse, in one sentence naming the step and its type, what cannot be converted soundly."""
    from skl2onnx._supported_operators import sklearn_operator_name_map

    from serving.packaging.boosting import register_converters
    from serving.packaging.hgb import takes_text_categories

    register_converters()
    for path, step in walk(estimator):
        cls = type(step)
        if takes_text_categories(step):
            raise UnsupportedModel(
                f"cannot convert {type(estimator).__name__} to ONNX: "
                f"step {path!r} is a {cls.__name__} whose native categorical features are "
                "text, which ONNX tree ensembles cannot compare: encode those columns in the "
                "pipeline (an OrdinalEncoder in a ColumnTransformer before it, keeping "
                "categorical_features on the encoded columns), or " + _way_out())
        if cls not in sklearn_operator_name_map:
            library = cls.__module__.split(".")[0]
            extra = _EXTRAS.get(library)
            hint = f" (install serving[{extra}] for its converter)" if extra else ""
            raise UnsupportedModel(
                f"cannot convert {type(estimator).__name__} to ONNX: step {path!r} is a "
                f"{cls.__module__}.{cls.__name__}, which has no ONNX converter here{hint}: "
                + _way_out())


def _tensor_type(datatype: str, shape: list[int | None]) -> Any:
    from skl2onnx.common.data_types import (
        DoubleTensorType,
        FloatTensorType,
        Int64TensorType,
        StringTensorType,
    )

    types = {"FP32": FloatTensorType, "FP64": DoubleTensorType, "INT64": Int64TensorType,
             "BYTES": StringTensorType}
    return types[datatype](shape)


def _convert(estimator: Any, initial_types: list[tuple[str, Any]]) -> Any:
    from skl2onnx import convert_sklearn

    from serving.packaging.boosting import register_converters

    register_converters()
    estimator = _unnamed_booster(estimator)
    last = final_step(estimator)
    options = {id(last): {"zipmap": False}} if is_classifier(last) else None
    from serving.packaging.hgb import with_tree_ensemble_opset

    onx = convert_sklearn(estimator, initial_types=initial_types, options=options,
                          target_opset=TARGET_OPSET)
    return with_tree_ensemble_opset(onx)


def _unnamed_booster(estimator: Any) -> Any:
    """A copy whose XGBoost booster has no feature names: onnxmltools' converter reads the
    trees' split features as `f<index>`, and a model fit on a DataFrame names them after its
    columns instead. The order of the features is unchanged."""
    get_booster = getattr(final_step(estimator), "get_booster", None)
    if get_booster is None or not get_booster().feature_names:
        return estimator
    import copy

    clone = copy.deepcopy(estimator)
    booster = final_step(clone).get_booster()
    booster.feature_names = None
    booster.feature_types = None
    return clone


def to_onnx(
    estimator: Any, n_features: int, datatype: str = "FP32", input_name: str = "input"
) -> Any:
    """ONNX with one `input` [-1, n_features]; classifiers output `label` and `probabilities`."""
    return _convert(estimator, [(input_name, _tensor_type(datatype, [None, n_features]))])


def _columns_first(estimator: Any, names: list[str]) -> Any:
    """The estimator behind a ColumnTransformer that passes the named columns through, in
    order: converters other than ColumnTransformer's take one input, so an estimator (or a
    Pipeline starting with a scaler) fit on a DataFrame is converted as one fed by a Concat."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    first = estimator.steps[0][1] if hasattr(estimator, "steps") else estimator
    if hasattr(first, "transformers_"):
        return estimator
    concat = ColumnTransformer([("columns", "passthrough", names)])
    concat.fit(_empty_frame(names))
    rest = list(estimator.steps) if hasattr(estimator, "steps") else [("model", estimator)]
    return Pipeline([("columns", concat), *rest])


def _empty_frame(names: list[str]) -> Any:
    import pandas as pd

    return pd.DataFrame({n: [0.0] for n in names})


def to_onnx_columns(estimator: Any, columns: Sequence[tuple[str, str]]) -> Any:
    """ONNX with one input [-1, 1] per (column, datatype), named after the column."""
    names = [name for name, _ in columns]
    model = _columns_first(estimator, names) if len(names) > 1 else estimator
    return _convert(model, [(name, _tensor_type(dt, [None, 1])) for name, dt in columns])
