"""The Open Inference Protocol (KServe V2 REST) with Triton's binary tensor data extension."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from serving.errors import BadRequest
from serving.protocol import binary
from serving.protocol.columns import PD_JSON, conform, pd_json_strings
from serving.protocol.datatypes import NUMPY_DTYPES, numpy_dtype
from serving.protocol.jsondata import FLOATS, array_from_json, floats_with_nulls, loads_request
from serving.protocol.kernels import plain_input, plain_inputs
from serving.signature import Signature
from serving.types import InferRequest, InferResponse, RequestedOutput, Tensor

_MAX_ELEMENTS = 1 << 31


def checked_shape(value: Any, name: str) -> tuple[int, ...]:
    """Input `name`'s shape: a list of at most 32 integers >= 0, of at most 2**31 elements
    (the JSON and gRPC decoders' one check)."""
    if not isinstance(value, list) or len(value) > 32:
        raise BadRequest(f"input {name!r}: 'shape' must be a list of at most 32 integers")
    for d in value:
        if type(d) is not int or d < 0:
            raise BadRequest(f"input {name!r}: 'shape' must hold non-negative integers, got {d!r}")
    shape = tuple(value)
    if math.prod(shape) > _MAX_ELEMENTS:
        raise BadRequest(f"input {name!r}: shape {list(shape)} is too large")
    return shape


def _parameters(obj: dict[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    return params


def decode_request(
    body: bytes, header_length: int | None = None, signature: Signature | None = None
) -> InferRequest:
    """Parse a V2 inference request (JSON, or JSON header + binary tensors)."""
    if header_length is None:
        head, tail = body, memoryview(b"")
    else:
        if header_length < 0 or header_length > len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length {header_length} does not fit a body of "
                f"{len(body)} bytes"
            )
        if header_length == 0:
            return _decode_raw(body, signature)
        head, tail = body[:header_length], memoryview(body)[header_length:]
    if not head:
        raise BadRequest("empty request body: expected a JSON inference request")
    obj, spans = loads_request(head, len(signature.inputs) if signature is not None else 1)
    if not isinstance(obj, dict):
        raise BadRequest("the request must be a JSON object")
    req_params = _parameters(obj, "request")
    req_id = obj.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise BadRequest("'id' must be a string")
    inputs_obj = obj.get("inputs")
    if not isinstance(inputs_obj, list) or not inputs_obj:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    # the usual request (every input plain, JSON data): one compiled call for all of them
    plain = None if spans else plain_inputs(inputs_obj, Tensor, PD_JSON)
    inputs: list[Tensor] = plain or []
    offset = 0
    for index, item in enumerate(() if plain else inputs_obj):
        span = spans.get(index) if spans else None
        tensor, used = _decode_input(item, tail, offset, span)
        inputs.append(tensor)
        offset += used
    if offset != len(tail):
        raise BadRequest(
            f"binary data has {len(tail) - offset} bytes that no input claims "
            "(check binary_data_size and Inference-Header-Content-Length)"
        )
    outputs = _requested_outputs(obj.get("outputs"))
    binary_outputs = req_params.get("binary_data_output", False)
    if not isinstance(binary_outputs, bool):
        raise BadRequest("parameter binary_data_output must be true or false")
    if signature is not None:
        inputs = conform(inputs, signature)
    return InferRequest(inputs, req_id, outputs, req_params, binary_outputs)


def _decode_input(
    item: object, tail: memoryview, offset: int, span: Any
) -> tuple[Tensor, int]:
    """One entry of 'inputs', and the bytes of binary data it used from `tail` at `offset`."""
    if span is None:
        # the usual form (a name, a common datatype, a shape and its data, plain): checked and
        # converted in one compiled call, about a third of the general path's cost per input
        plain = plain_input(item)
        if plain is not None:
            name, datatype, shape, data, params = plain
            if params and params.get("content_type") == PD_JSON and datatype == "BYTES":
                data = pd_json_strings(data, name)
            return Tensor(name, datatype, shape, data, params, True), 0
    return _decode_general(item, tail, offset, span)


def _decode_general(
    item: object, tail: memoryview, offset: int, span: Any
) -> tuple[Tensor, int]:
    """`_decode_input` for every form: binary data, spans, nulls, and all the errors."""
    if not isinstance(item, dict):
        raise BadRequest("each input must be an object with name, datatype, shape and data")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("each input needs a 'name' string")
    datatype = item.get("datatype")
    if not isinstance(datatype, str):
        raise BadRequest(f"input {name!r} needs a 'datatype' string")
    numpy_dtype(datatype)
    shape = checked_shape(item.get("shape"), name)
    count = math.prod(shape)
    params = _parameters(item, f"input {name!r}")
    size = params.get("binary_data_size")
    if size is not None:
        data = _binary_input(tail, offset, size, datatype, count, name)
        return Tensor(name, datatype, shape, data, params, False), size
    finite = True  # JSON numbers cannot be NaN or Infinity
    try:
        if span is not None:
            data = span(datatype, name)
        elif "data" in item:
            data = array_from_json(item["data"], datatype, name)
        else:
            raise BadRequest(f"input {name!r} has neither 'data' nor binary_data_size")
    except BadRequest:
        if datatype not in FLOATS:
            raise
        # nulls for missing values: NaN, then judged by the model's NaN policy
        nulls = (span(datatype, name, True) if span is not None
                 else floats_with_nulls(item.get("data"), datatype, name))
        if nulls is None:
            raise
        data, finite = nulls, False
    if data.size != count:
        raise BadRequest(
            f"input {name!r}: 'data' has {data.size} elements but shape "
            f"{list(shape)} needs {count}"
        )
    if params and params.get("content_type") == PD_JSON and datatype == "BYTES":
        data = pd_json_strings(data, name)
    return Tensor(name, datatype, shape, data, params, finite), 0


def _binary_input(
    tail: memoryview, offset: int, size: object, datatype: str, count: int, name: str
) -> np.ndarray:
    if type(size) is not int or size < 0:
        raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative integer")
    if offset + size > len(tail):
        raise BadRequest(
            f"input {name!r}: binary_data_size {size} goes past the end of the binary "
            f"data ({len(tail) - offset} bytes left)"
        )
    return binary.decode_binary_tensor(tail[offset : offset + size], datatype, count, name)


def _requested_outputs(value: Any) -> list[RequestedOutput] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadRequest("'outputs' must be a list")
    outputs = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest("each requested output must be an object with a 'name'")
        params = _parameters(item, f"output {item['name']!r}")
        binary_data = params.get("binary_data")
        if binary_data is not None and not isinstance(binary_data, bool):
            raise BadRequest(f"output {item['name']!r}: binary_data must be true or false")
        k = params.get("classification", 0)
        if type(k) is not int or k < 0:
            raise BadRequest(f"output {item['name']!r}: classification must be an integer >= 0")
        outputs.append(RequestedOutput(item["name"], binary_data, k))
    return outputs


def _decode_raw(body: bytes, signature: Signature | None) -> InferRequest:
    """Header length 0: the whole body is the raw data of the model's single input."""
    if signature is None or len(signature.inputs) != 1:
        raise BadRequest("a raw binary body (header length 0) needs a model with exactly one input")
    spec = signature.inputs[0]
    if spec.datatype == "BYTES":
        raise BadRequest("a raw binary body cannot carry a BYTES input")
    itemsize = NUMPY_DTYPES[spec.datatype].itemsize
    fixed = math.prod(d for d in spec.shape if d != -1)
    variable = sum(1 for d in spec.shape if d == -1)
    if variable > 1 or len(body) % (fixed * itemsize):
        raise BadRequest(
            f"raw binary body of {len(body)} bytes does not fit input {spec.name!r} "
            f"{spec.datatype}{list(spec.shape)}"
        )
    rows = len(body) // (fixed * itemsize)
    shape = tuple(rows if d == -1 else d for d in spec.shape)
    data = binary.decode_binary_tensor(body, spec.datatype, math.prod(shape), spec.name)
    return InferRequest([Tensor(spec.name, spec.datatype, shape, data)], binary_outputs=True)


def classify(
    scores: np.ndarray, k: int, labels: tuple[str, ...], name: str
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Triton's classification extension: top-k "score:index[:label]" strings per row."""
    if scores.dtype.kind not in "fiu" or scores.ndim not in (1, 2):
        raise BadRequest(f"output {name!r} cannot be classified (datatype or rank)")
    rows = scores.reshape(1, -1) if scores.ndim == 1 else scores
    k = min(k, rows.shape[1])
    top = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    out = np.empty((rows.shape[0], k), dtype=object)
    with_labels = len(labels) == rows.shape[1]
    for r in range(rows.shape[0]):
        for j, idx in enumerate(top[r]):
            text = f"{float(rows[r, idx]):f}:{int(idx)}"
            out[r, j] = f"{text}:{labels[idx]}" if with_labels else text
    shape = (k,) if scores.ndim == 1 else (rows.shape[0], k)
    return out.reshape(shape), shape


def encode_response(
    response: InferResponse, binary_outputs: set[str] | None = None
) -> tuple[bytes, int | None]:
    """JSON bytes, or JSON header + binary tensors and the header's length."""
    outs = []
    blobs: list[bytes] = []
    for t in response.outputs:
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if binary_outputs is not None and t.name in binary_outputs:
            blob = binary.encode_binary_tensor(t.data, t.datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif t.datatype == "BYTES":
            entry["data"] = [_text(x) for x in t.data.ravel()]
        elif t.datatype == "FP16":
            entry["data"] = t.data.astype(np.float32).ravel()
        else:
            entry["data"] = t.data.ravel()
        outs.append(entry)
    doc: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outs
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def _text(x: Any) -> str:
    if isinstance(x, bytes):
        return x.decode("utf-8", errors="replace")
    return str(x)
