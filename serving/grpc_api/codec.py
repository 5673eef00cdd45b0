"""ModelInferRequest -> InferRequest and InferResponse -> ModelInferResponse.

Tensors come as typed `contents` (one repeated field per datatype family) or as
`raw_input_contents` (Triton's binary layout: little-endian values, BYTES as 4-byte length +
bytes). Raw contents go through `protocol/binary.py`, which checks every size against the
declared shape before numpy sees a byte; typed contents are checked for count and range.
Responses always carry `raw_output_contents`, as Triton's do: one bytes copy per output.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from serving.errors import BadRequest
from serving.grpc_api.proto import grpc_service_pb2 as pb
from serving.protocol import binary
from serving.protocol.columns import conform
from serving.protocol.datatypes import NUMPY_DTYPES, numpy_dtype
from serving.protocol.v2 import checked_shape
from serving.signature import Signature
from serving.types import InferRequest, InferResponse, RequestedOutput, Tensor

# datatype -> the InferTensorContents field that carries it (FP16 has none: raw only)
_FIELDS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def parameters(params: Any) -> dict[str, Any]:
    """A protobuf map<string, InferParameter> as plain Python values."""
    out: dict[str, Any] = {}
    for key, p in params.items():
        kind = p.WhichOneof("parameter_choice")
        out[key] = getattr(p, kind) if kind is not None else None
    return out


def _typed(name: str, datatype: str, contents: Any, count: int) -> np.ndarray:
    """A flat array from the typed contents field of `datatype`, count and range checked."""
    field = _FIELDS.get(datatype)
    if field is None:
        raise BadRequest(f"input {name!r}: {datatype} travels in raw_input_contents only")
    values = getattr(contents, field)
    if len(values) != count:
        raise BadRequest(
            f"input {name!r}: contents.{field} has {len(values)} elements, shape needs {count}"
        )
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        for i, b in enumerate(values):
            try:
                out[i] = b.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"input {name!r}: BYTES element {i} is not UTF-8 text") from None
        return out
    dtype = NUMPY_DTYPES[datatype]
    if dtype.kind in "iu" and dtype.itemsize < 4:  # carried as 32-bit: check the range
        wide = np.array(values, dtype=np.int64)
        info = np.iinfo(dtype)
        if count and (wide.min() < info.min or wide.max() > info.max):
            raise BadRequest(f"input {name!r}: a value is out of range for {datatype}")
        return wide.astype(dtype)
    return np.array(values, dtype=dtype)


def decode_request(
    msg: Any, signature: Signature
) -> tuple[str, str, InferRequest]:
    """(model, version, request) of a ModelInferRequest."""
    raw = msg.raw_input_contents
    if raw and len(raw) != len(msg.inputs):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(msg.inputs)} inputs "
            "(use raw contents for every input or for none)"
        )
    if not msg.inputs:
        raise BadRequest("the request has no inputs")
    inputs: list[Tensor] = []
    for i, t in enumerate(msg.inputs):
        name, datatype = t.name, t.datatype
        if not name:
            raise BadRequest("each input needs a name")
        numpy_dtype(datatype)
        shape = checked_shape(list(t.shape), name)
        count = math.prod(shape)
        if raw:
            data = binary.decode_binary_tensor(raw[i], datatype, count, name)
        else:
            data = _typed(name, datatype, t.contents, count)
        params = parameters(t.parameters) if t.parameters else {}
        inputs.append(Tensor(name, datatype, shape, data, params, False))
    outputs = None
    if msg.outputs:
        outputs = []
        for o in msg.outputs:
            k = o.parameters["classification"].int64_param if "classification" in o.parameters \
                else 0
            if k < 0:
                raise BadRequest(f"output {o.name!r}: classification must be an integer >= 0")
            outputs.append(RequestedOutput(o.name, True, k))
    params = parameters(msg.parameters) if msg.parameters else {}
    req = InferRequest(conform(inputs, signature), msg.id or None, outputs, params, True)
    return msg.model_name, msg.model_version, req


def encode_response(response: InferResponse, _binary: object = None) -> tuple[Any, None]:
    """(a ModelInferResponse with every output in raw_output_contents, None): the data plane's
    encoder signature (gRPC outputs are always binary)."""
    msg = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version,
        id=response.id or "",
    )
    for key, value in response.parameters.items():
        if type(value) is int:
            msg.parameters[key].int64_param = value
    raw = msg.raw_output_contents
    for t in response.outputs:
        msg.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        raw.append(binary.encode_binary_tensor(t.data, t.datatype))
    return msg, None
