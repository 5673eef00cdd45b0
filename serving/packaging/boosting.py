"""Gradient-boosting libraries in skl2onnx: XGBoost and LightGBM through onnxmltools' converters,
CatBoost through its own ONNX export, each registered when its library is installed.

Each library is an optional extra (`serving[xgboost]`, `serving[lightgbm]`, `serving[catboost]`);
a model of a library that is not installed could not have been unpickled in the first place.
"""

from __future__ import annotations

from typing import Any

_CLASSIFIER_OPTIONS: dict[str, Any] = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
_registered = False


def register_converters() -> None:
    """Register every installed library's converters with skl2onnx (once per process)."""
    global _registered
    if _registered:
        return
    _registered = True
    from serving.packaging.hgb import register_hgb_converters

    register_hgb_converters()
    _register_xgboost()
    _register_lightgbm()
    _register_catboost()


def _register_pair(
    library: str, classifier: Any, regressor: Any, converter: Any,
    classifier_options: dict[str, Any] | None = None,
    regressor_options: dict[str, Any] | None = None, classifier_parser: Any = None,
) -> None:
    """One library's classifier and regressor, with skl2onnx's linear shape calculators."""
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(
        classifier, f"{library}{classifier.__name__}", calculate_linear_classifier_output_shapes,
        converter, parser=classifier_parser,
        options=_CLASSIFIER_OPTIONS if classifier_options is None else classifier_options)
    update_registered_converter(
        regressor, f"{library}{regressor.__name__}", calculate_linear_regressor_output_shapes,
        converter, options=regressor_options)


def _register_xgboost() -> None:
    try:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor
    except ImportError:
        return
    _register_pair("XGBoost", XGBClassifier, XGBRegressor, convert_xgboost)


def _register_lightgbm() -> None:
    try:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    except ImportError:
        return
    _register_pair("LightGbm", LGBMClassifier, LGBMRegressor, convert_lightgbm,
                   regressor_options={"split": None})


def _register_catboost() -> None:
    try:
        from catboost import CatBoostClassifier, CatBoostRegressor
    except ImportError:
        return
    _register_pair("CatBoost", CatBoostClassifier, CatBoostRegressor, _convert_catboost,
                   classifier_parser=_parse_catboost_classifier)


def _parse_catboost_classifier(
    scope: Any, model: Any, inputs: list[Any], **_parser_options: Any
) -> list[Any]:
    """Label and probabilities outputs (skl2onnx does not take CatBoost for a classifier)."""
    from skl2onnx._parse import _apply_zipmap, _get_sklearn_operator_name
    from skl2onnx.common.data_types import Int64TensorType, guess_tensor_type

    options = scope.get_options(model, {"zipmap": True})
    operator = scope.declare_local_operator(_get_sklearn_operator_name(type(model)), model)
    operator.inputs = inputs
    operator.outputs.append(scope.declare_local_variable("label", Int64TensorType()))
    operator.outputs.append(
        scope.declare_local_variable("probabilities", guess_tensor_type(inputs[0].type)))
    if options["zipmap"] is False:
        return list(operator.outputs)
    return _apply_zipmap(  # type: ignore[no-any-return]
        options["zipmap"], scope, model, inputs[0].type, operator.outputs)


def _convert_catboost(scope: Any, operator: Any, container: Any) -> None:
    """CatBoost's own ONNX export: its tree-ensemble node, wired to skl2onnx's variables."""
    from catboost.utils import convert_to_onnx_object
    from onnx.helper import get_attribute_value

    onx = convert_to_onnx_object(operator.raw_operator)
    opsets = {d.domain: d.version for d in onx.opset_import}
    node = onx.graph.node[0]
    container.add_node(
        node.op_type, [operator.inputs[0].full_name], [o.full_name for o in operator.outputs],
        op_domain=node.domain, op_version=opsets.get(node.domain),
        **{a.name: get_attribute_value(a) for a in node.attribute})
