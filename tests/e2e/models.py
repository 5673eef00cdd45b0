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
