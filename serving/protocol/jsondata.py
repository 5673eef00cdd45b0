"""JSON bodies and tensor `data`: orjson for the document, typed buffers for the numbers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from serving.errors import BadRequest
from serving.protocol.datatypes import NUMPY_DTYPES

# Below this size orjson + numpy is as fast as splitting the body; above it, big numeric `data`
# arrays are parsed straight into typed buffers by the compiled kernel (no Python floats).
SPLIT_THRESHOLD = 2048

SpanDecoder = Callable[[str, str], np.ndarray]


def loads(body: bytes | memoryview) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def loads_request(body: bytes | memoryview) -> tuple[Any, dict[int, SpanDecoder] | None]:
    """The request document, and decoders for the inputs' `data` arrays kept out of it."""
    if len(body) < SPLIT_THRESHOLD:
        return loads(body), None
    from serving.protocol.kernels import decode_json_numbers, split_tensor_data

    raw = bytes(body)
    split = split_tensor_data(raw)
    if split is None or not split[1]:
        return loads(raw), None
    skeleton, spans = split
    obj = loads(skeleton)

    def decoder(start: int, end: int) -> SpanDecoder:
        def decode(datatype: str, name: str) -> np.ndarray:
            if datatype == "BYTES":
                return array_from_json(loads(raw[start:end]), datatype, name)
            try:
                arr, _shape = decode_json_numbers(raw, start, end, datatype)
            except (ValueError, OverflowError) as exc:
                raise BadRequest(f"input {name!r}: {exc}") from None
            return arr

        return decode

    return obj, {index: decoder(start, end) for index, start, end in spans}


def _flatten(data: list[Any], out: list[Any]) -> None:
    for x in data:
        if isinstance(x, list):
            _flatten(x, out)
        else:
            out.append(x)


def array_from_json(data: Any, datatype: str, name: str) -> np.ndarray:
    """A flat array of `datatype` from a JSON `data` value (flat or nested lists)."""
    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: 'data' must be a list")
    if datatype == "BYTES":
        flat: list[Any] = []
        _flatten(data, flat)
        out = np.empty(len(flat), dtype=object)
        for i, x in enumerate(flat):
            if not isinstance(x, str):
                raise BadRequest(f"input {name!r}: BYTES data must hold strings, got {_kind(x)}")
            out[i] = x.encode()
        return out
    try:
        arr = np.array(data)
    except ValueError:
        raise BadRequest(
            f"input {name!r}: 'data' is ragged: nested lists have different lengths"
        ) from None
    return _cast(arr, datatype, name).ravel()


def _kind(x: Any) -> str:
    return {str: "string", bool: "boolean", type(None): "null", dict: "object"}.get(
        type(x), type(x).__name__
    )


def _cast(arr: np.ndarray, datatype: str, name: str) -> np.ndarray:
    dtype = NUMPY_DTYPES[datatype]
    kind = arr.dtype.kind
    if arr.size == 0:
        return arr.astype(dtype)
    if datatype == "BOOL":
        if kind != "b":
            raise BadRequest(f"input {name!r}: BOOL data must hold true/false")
        return arr
    if dtype.kind in "iu":
        if kind not in "iu":
            raise BadRequest(f"input {name!r}: {datatype} data must hold integers")
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise BadRequest(f"input {name!r}: data has values out of range for {datatype}")
        return arr.astype(dtype)
    if kind not in "iuf":
        raise BadRequest(f"input {name!r}: {datatype} data must hold numbers")
    return arr.astype(dtype)
