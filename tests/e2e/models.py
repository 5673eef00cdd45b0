"""Small ONNX models made in the tests (onnx.helper) and published like any other version."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from serving.packaging.describe import make_manifest
from serving.packaging.publish import publish_version

# V2 datatype -> ONNX element type, for every datatype an ONNX model can take.
ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def identity_model(datatypes: list[str], width: int = 2) -> bytes:
    """One Identity per datatype: input `x_<dt>` [-1, width] -> output `y_<dt>`."""
    nodes, inputs, outputs = [], [], []
    for dt in datatypes:
        t = ONNX_TYPES[dt]
        inputs.append(helper.make_tensor_value_info(f"x_{dt}", t, ["N", width]))
        outputs.append(helper.make_tensor_value_info(f"y_{dt}", t, ["N", width]))
        nodes.append(helper.make_node("Identity", [f"x_{dt}"], [f"y_{dt}"]))
    graph = helper.make_graph(nodes, "identity", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def publish(registry: Path, name: str, onnx_bytes: bytes, model_toml: str | None = None) -> int:
    return publish_version(registry, make_manifest(name, onnx_bytes), onnx_bytes, model_toml)


def iris_like(kind: str) -> bytes:
    """Models with the iris example's signature (input [-1, 4] -> label, probabilities) that
    are bad on purpose: "errors" fails every run, "slow" burns ~milliseconds per row."""
    import numpy as np

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])
    proba = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3],
                           np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], np.float32)
                           .ravel().tolist())
    nodes = [helper.make_node("MatMul", ["input", "w"], ["logits"])]
    inits = [w]
    if kind == "errors":
        # Gather at an index computed from the input, far out of range: every run fails at
        # run time (shape inference cannot see it, so the model loads).
        inits += [helper.make_tensor("table", TensorProto.FLOAT, [3], [0.0, 0.0, 0.0]),
                  helper.make_tensor("far", TensorProto.FLOAT, [], [1000.0])]
        nodes += [helper.make_node("ReduceSum", ["input"], ["total"], keepdims=0),
                  helper.make_node("Abs", ["total"], ["pos"]),
                  helper.make_node("Add", ["pos", "far"], ["idx_f"]),
                  helper.make_node("Cast", ["idx_f"], ["idx"], to=TensorProto.INT64),
                  helper.make_node("Gather", ["table", "idx"], ["g"]),
                  helper.make_node("Add", ["logits", "g"], ["scores"])]
    elif kind == "slow":
        from onnx import numpy_helper

        n, depth = 1024, 48  # ~100 MFLOP per row: milliseconds where iris takes microseconds
        rng = np.random.default_rng(0)
        inits += [numpy_helper.from_array(rng.random((4, n), dtype=np.float32), "a"),
                  numpy_helper.from_array(rng.random((n, n), dtype=np.float32) * 1e-3, "b"),
                  helper.make_tensor("tiny", TensorProto.FLOAT, [], [1e-30])]
        nodes.append(helper.make_node("MatMul", ["input", "a"], ["h0"]))
        for i in range(depth):
            nodes.append(helper.make_node("MatMul", [f"h{i}", "b"], [f"h{i + 1}"]))
        nodes += [helper.make_node("ReduceSum", [f"h{depth}"], ["s"], keepdims=1),
                  helper.make_node("Mul", ["s", "tiny"], ["z"]),
                  helper.make_node("Add", ["logits", "z"], ["scores"])]
    else:
        raise ValueError(kind)
    nodes += [helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
              helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0)]
    graph = helper.make_graph(nodes, kind, [x], [label, proba], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()
