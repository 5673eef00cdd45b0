"""HistGradientBoosting with native categorical features, converted to ONNX's TreeEnsemble
(ai.onnx.ml opset 5), whose set-membership branches express the category splits.

skl2onnx's own converter has no category splits; models without them still go through it. The
category splits follow scikit-learn's predictor: a value in the split's left set goes left, a
known category outside it goes right, and NaN, negative values and unknown categories go where
missing values go. Categories are integer codes (as HistGradientBoosting requires).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

ML_OPSET = 5  # TreeEnsemble with BRANCH_MEMBER
_LEQ, _MEMBER = 0, 6


def has_native_categories(step: Any) -> bool:
    mask = getattr(step, "is_categorical_", None)
    return mask is not None and bool(np.asarray(mask).any())


def _raw_categories(model: Any) -> list[np.ndarray]:
    """The category values the estimator's own encoder maps to codes 0, 1, ... (per
    categorical feature, in its internal order: categorical features first)."""
    pre = getattr(model, "_preprocessor", None)
    if pre is None:  # older scikit-learn: the values are the codes
        known, _ = model._bin_mapper.make_known_categories_bitsets()
        return [np.arange(32 * known.shape[1]) for _ in range(known.shape[0])]
    return list(pre.named_transformers_["encoder"].categories_)


def takes_text_categories(step: Any) -> bool:
    """Categories that are text (the estimator was given string columns): its own encoder does
    what ONNX's TreeEnsemble cannot."""
    if not has_native_categories(step):
        return False
    return any(np.asarray(c).dtype.kind not in "iuf" for c in _raw_categories(step))


def _bits(bitset: np.ndarray) -> list[int]:
    words = np.asarray(bitset, np.uint64)
    return [i for i in range(32 * len(words)) if (int(words[i // 32]) >> (i % 32)) & 1]


@dataclass
class _Trees:
    """The attribute lists of one TreeEnsemble node, filled tree by tree."""

    roots: list[int] = field(default_factory=list)
    features: list[int] = field(default_factory=list)
    modes: list[int] = field(default_factory=list)
    splits: list[float] = field(default_factory=list)
    true_ids: list[int] = field(default_factory=list)
    true_leaf: list[int] = field(default_factory=list)
    false_ids: list[int] = field(default_factory=list)
    false_leaf: list[int] = field(default_factory=list)
    missing_true: list[int] = field(default_factory=list)
    members: list[float] = field(default_factory=list)
    leaf_targets: list[int] = field(default_factory=list)
    leaf_weights: list[float] = field(default_factory=list)

    def node(self, feature: int, mode: int, split: float, missing_true: int) -> int:
        self.features.append(feature)
        self.modes.append(mode)
        self.splits.append(split)
        self.missing_true.append(missing_true)
        for lst in (self.true_ids, self.true_leaf, self.false_ids, self.false_leaf):
            lst.append(0)
        return len(self.features) - 1

    def leaf(self, target: int, value: float) -> int:
        self.leaf_targets.append(target)
        self.leaf_weights.append(value)
        return len(self.leaf_weights) - 1

    def link(self, at: int, true: tuple[bool, int], false: tuple[bool, int]) -> None:
        self.true_leaf[at], self.true_ids[at] = int(true[0]), true[1]
        self.false_leaf[at], self.false_ids[at] = int(false[0]), false[1]


def _add_tree(trees: _Trees, predictor: Any, model: Any, target: int) -> None:
    known, f_idx = model._bin_mapper.make_known_categories_bitsets()
    raw = _raw_categories(model)
    # internal feature order: the categorical features, then the numeric ones
    mask = np.asarray(model.is_categorical_, bool)
    original = np.concatenate([np.flatnonzero(mask), np.flatnonzero(~mask)])
    nodes = predictor.nodes
    raw_left = predictor.raw_left_cat_bitsets

    def add(i: int) -> tuple[bool, int]:
        n = nodes[i]
        if n["is_leaf"]:
            return True, trees.leaf(target, float(n["value"]))
        internal = int(n["feature_idx"])
        feature = int(original[internal])
        left_first = bool(n["missing_go_to_left"])
        if n["is_categorical"]:
            left = set(_bits(raw_left[n["bitset_idx"]]))
            right = set(_bits(known[f_idx[internal]])) - left
            # test the set whose complement holds the missing / unknown values, as the
            # category values the estimator was given (its encoder's, before the codes)
            values = raw[int(f_idx[internal])]
            codes = sorted(right) if left_first else sorted(left)
            members = [float(values[c]) for c in codes if c < len(values)]
            if members:
                at = trees.node(feature, _MEMBER, float("nan"), 0)
                trees.members.extend([*map(float, members), float("nan")])
            else:  # nothing to test: always the false branch (NaN compares false)
                at = trees.node(feature, _LEQ, float("nan"), 0)
            l_child, r_child = add(int(n["left"])), add(int(n["right"]))
            trees.link(at, *((r_child, l_child) if left_first else (l_child, r_child)))
        else:
            at = trees.node(feature, _LEQ, float(n["num_threshold"]), int(left_first))
            trees.link(at, add(int(n["left"])), add(int(n["right"])))
        return False, at

    root = add(0)
    if root[0]:  # a single leaf: a node that always takes it
        at = trees.node(0, _LEQ, float("nan"), 0)
        trees.link(at, root, root)
        root = (False, at)
    trees.roots.append(root[1])


def _ensemble(model: Any) -> tuple[_Trees, int]:
    trees = _Trees()
    for per_iteration in model._predictors:
        for k, predictor in enumerate(per_iteration):
            _add_tree(trees, predictor, model, k)
    return trees, len(model._predictors[0])


def _tensor(name: str, values: list[Any], dtype: Any) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(values, dtype), name)


def convert_categorical_hgb(scope: Any, operator: Any, container: Any) -> None:
    """The TreeEnsemble, the baseline and the link function (and labels for a classifier)."""
    model = operator.raw_operator
    trees, n_targets = _ensemble(model)
    x = operator.inputs[0].full_name
    dtype = np.float64 if operator.inputs[0].type.__class__.__name__.startswith("Double") \
        else np.float32
    raw = scope.get_unique_variable_name("raw")
    container.add_node(
        "TreeEnsemble", [x], [raw], op_domain="ai.onnx.ml", op_version=3,  # see below
        name=scope.get_unique_operator_name("TreeEnsemble"),
        aggregate_function=1, post_transform=0, n_targets=n_targets, tree_roots=trees.roots,
        nodes_featureids=trees.features, nodes_modes=_tensor("m", trees.modes, np.uint8),
        nodes_splits=_tensor("s", trees.splits, dtype), nodes_truenodeids=trees.true_ids,
        nodes_trueleafs=trees.true_leaf, nodes_falsenodeids=trees.false_ids,
        nodes_falseleafs=trees.false_leaf,
        nodes_missing_value_tracks_true=trees.missing_true,
        membership_values=_tensor("v", trees.members or [float("nan")], dtype),
        leaf_targetids=trees.leaf_targets, leaf_weights=_tensor("w", trees.leaf_weights, dtype))
    base = scope.get_unique_variable_name("baseline")
    container.add_initializer(base, _onnx_type(dtype), [1, n_targets],
                              np.asarray(model._baseline_prediction, dtype).ravel().tolist())
    score = scope.get_unique_variable_name("score")
    container.add_node("Add", [raw, base], [score], name=scope.get_unique_operator_name("Add"))
    if hasattr(model, "classes_"):
        _classifier_outputs(scope, operator, container, score, n_targets, dtype)
    else:
        op = "Exp" if type(model._loss).__name__ in ("HalfPoissonLoss", "HalfGammaLoss") \
            else "Identity"
        container.add_node(op, [score], [operator.outputs[0].full_name],
                           name=scope.get_unique_operator_name(op))


def with_tree_ensemble_opset(onx: Any) -> Any:
    """skl2onnx writes models of ai.onnx.ml opset 3 at most: a model holding a TreeEnsemble
    (added in opset 5) declares opset 5, where the older ml operators keep their meaning."""
    if not any(n.op_type == "TreeEnsemble" for n in onx.graph.node):
        return onx
    for imp in onx.opset_import:
        if imp.domain == "ai.onnx.ml":
            imp.version = ML_OPSET
    onx.ir_version = max(onx.ir_version, 9)
    return onx


def _onnx_type(dtype: Any) -> int:
    from onnx import TensorProto

    return int(TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT)


def _classifier_outputs(scope: Any, operator: Any, container: Any, score: str, n_targets: int,
                        dtype: Any) -> None:
    from onnx import TensorProto

    name = scope.get_unique_operator_name
    proba = operator.outputs[1].full_name
    if n_targets == 1:
        p = scope.get_unique_variable_name("p")
        container.add_node("Sigmoid", [score], [p], name=name("Sigmoid"))
        one = scope.get_unique_variable_name("one")
        container.add_initializer(one, _onnx_type(dtype), [1], [1.0])
        q = scope.get_unique_variable_name("q")
        container.add_node("Sub", [one, p], [q], name=name("Sub"))
        container.add_node("Concat", [q, p], [proba], name=name("Concat"), axis=1)
    else:
        container.add_node("Softmax", [score], [proba], name=name("Softmax"), axis=1)
    idx = scope.get_unique_variable_name("idx")
    container.add_node("ArgMax", [proba], [idx], name=name("ArgMax"), axis=1, keepdims=0)
    classes = np.asarray(operator.raw_operator.classes_)
    cls = scope.get_unique_variable_name("classes")
    if classes.dtype.kind in "iu":
        container.add_initializer(cls, TensorProto.INT64, [len(classes)],
                                  classes.astype(np.int64).tolist())
    else:
        container.add_initializer(cls, TensorProto.STRING, [len(classes)],
                                  [str(c).encode() for c in classes])
    container.add_node("Gather", [cls, idx], [operator.outputs[0].full_name], name=name("Gather"),
                       axis=0)


def register_hgb_converters() -> None:
    """HistGradientBoosting* convert through here: category splits as TreeEnsemble set
    membership, everything else through skl2onnx's own converter."""
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from skl2onnx.operator_converters.random_forest import (
        convert_sklearn_random_forest_classifier,
        convert_sklearn_random_forest_regressor_converter,
    )
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    def pick(default: Any) -> Any:
        def convert(scope: Any, operator: Any, container: Any) -> None:
            if has_native_categories(operator.raw_operator):
                convert_categorical_hgb(scope, operator, container)
            else:
                default(scope, operator, container)
        return convert

    update_registered_converter(
        HistGradientBoostingClassifier, "SklearnHistGradientBoostingClassifier",
        calculate_linear_classifier_output_shapes,
        pick(convert_sklearn_random_forest_classifier),
        options={"zipmap": [True, False, "columns"], "nocl": [True, False],
                 "raw_scores": [True, False]})
    update_registered_converter(
        HistGradientBoostingRegressor, "SklearnHistGradientBoostingRegressor",
        calculate_linear_regressor_output_shapes,
        pick(convert_sklearn_random_forest_regressor_converter))
