"""JSON bodies and tensor `data`: orjson for the document, typed buffers for the numbers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from serving.errors import BadRequest
from serving.protocol._reference import RAGGED, finish_numbers
from serving.protocol.datatypes import NUMPY_DTYPES
from serving.protocol.kernels import decode_json_numbers, numbers_from_list, split_tensor_data

# Below this size per model input, orjson + numpy is as fast as splitting the body; above it,
# big numeric `data` arrays are parsed straight into typed buffers by the compiled kernel (no
# Python floats). Per input, because each split-off array costs a few microseconds of Python
# of its own: a 64-row request of a 7-column tabular model (6 kB) decoded in 40 us split and in
# 25 us without.
SPLIT_THRESHOLD = 2048

# (datatype, name) -> array; (datatype, name, True) -> floats_with_nulls' answer
SpanDecoder = Callable[..., Any]

FLOATS = frozenset({"FP16", "FP32", "FP64"})


def loads(body: bytes | memoryview) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def loads_request(
    body: bytes | memoryview, inputs: int = 1
) -> tuple[Any, dict[int, SpanDecoder] | None]:
    """The request document, and decoders for the inputs' `data` arrays kept out of it (only
    for a body of more than SPLIT_THRESHOLD bytes per model input: `inputs`)."""
    if len(body) < SPLIT_THRESHOLD * inputs:
        return loads(body), None
    raw = bytes(body)
    split = split_tensor_data(raw)
    if split is None or not split[1]:
        return loads(raw), None
    skeleton, spans = split
    obj = loads(skeleton)

    def decoder(start: int, end: int) -> SpanDecoder:
        def decode(datatype: str, name: str, nulls: bool = False) -> np.ndarray | None:
            if nulls:
                return floats_with_nulls(loads(raw[start:end]), datatype, name)
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
    """A flat array of `datatype` from a JSON `data` value (flat or nested lists).

    The same checks and messages as the compiled path (`finish_numbers` is shared by both).
    """
    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: 'data' must be a list")
    if datatype == "BYTES":
        # the usual form, a flat list of strings: checked and copied in C (a string column of
        # 64 rows: about 2 us instead of 25)
        if data and set(map(type, data)) == {str}:
            return np.array(data, dtype=object)
        flat: list[Any] = []
        _flatten(data, flat)
        out = np.empty(len(flat), dtype=object)
        for i, x in enumerate(flat):
            if not isinstance(x, str):
                raise BadRequest(f"input {name!r}: BYTES data must hold strings, got {_kind(x)}")
            out[i] = x
        return out
    fast = numbers_from_list(data, datatype)
    if fast is not None:
        return fast
    try:
        arr = np.array(data)
    except ValueError:
        raise BadRequest(f"input {name!r}: {RAGGED}") from None
    return cast_numbers(arr, datatype, name)


def floats_with_nulls(data: Any, datatype: str, name: str) -> np.ndarray | None:
    """A float tensor whose JSON `data` has nulls for missing values (pandas' NaN, as MLServer's
    pandas codec sends it): nulls become NaN. None when `data` is not numbers and nulls (the
    caller then reports its first error). Only called once the strict decoders refused."""
    if datatype not in FLOATS or not isinstance(data, list):
        return None
    flat: list[Any] = []
    _flatten(data, flat)
    if None not in flat or any(x is not None and type(x) not in (int, float) for x in flat):
        return None
    try:
        arr = np.array(data, dtype=np.float64)
    except ValueError:  # ragged
        return None
    with np.errstate(over="ignore"):  # too big for FP32 becomes inf: the NaN check refuses it
        return arr.astype(NUMPY_DTYPES[datatype]).ravel()


def cast_numbers(arr: np.ndarray, datatype: str, name: str) -> np.ndarray:
    """`arr` (as numpy inferred it from JSON) checked against and cast to `datatype`, flat."""
    try:
        return finish_numbers(arr, datatype)[0]
    except ValueError as exc:
        raise BadRequest(f"input {name!r}: {exc}") from None


def _kind(x: Any) -> str:
    return {str: "string", bool: "boolean", type(None): "null", dict: "object"}.get(
        type(x), type(x).__name__
    )
