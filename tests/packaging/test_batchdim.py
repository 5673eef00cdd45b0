"""make_batchable: a fixed batch dimension of 1 becomes symbolic only when batched runs answer as
row-by-row runs do."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from serving.packaging.batchdim import make_batchable


def _model(node: onnx.NodeProto, inits: list[onnx.TensorProto], batch: int | str) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])
    graph = helper.make_graph([node], "g", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _relu(batch: int | str) -> bytes:
    return _model(helper.make_node("Relu", ["x"], ["y"]), [], batch)


def test_symbolic_batch_is_left_alone() -> None:
    raw = _relu("N")
    assert make_batchable(raw) == (raw, {"batchable": True})


def test_row_wise_model_is_rewritten_and_checked() -> None:
    out, info = make_batchable(_relu(1))
    assert info == {"batchable": True, "rewritten": True, "checked_batch_sizes": [1, 2, 7, 16]}
    dims = onnx.load_from_string(out).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and dims[1].dim_value == 3


def test_constant_reshape_keeps_the_fixed_batch_and_says_why() -> None:
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [1, 3])
    raw = _model(helper.make_node("Reshape", ["x", "s"], ["y"]), [shape], 1)
    out, info = make_batchable(raw)
    assert out == raw and info["batchable"] is False
    assert info["reason"].startswith("fixed batch dimension 1 on x, y")


def test_fixed_batch_other_than_one_is_not_rewritten() -> None:
    _, info = make_batchable(_relu(4))
    assert info["batchable"] is False and "other than 1" in info["reason"]
