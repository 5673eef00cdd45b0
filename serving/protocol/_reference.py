"""Pure-Python twins of the JSON kernels in `ext/_jsondata.pxi`: slow, obvious, and the spec.

`split_tensor_data` finds the inputs' numeric `data` arrays in a V2 request body so that orjson
parses only the small skeleton; `decode_json_numbers` turns one such array into a typed buffer.
The compiled kernels must return exactly what these return and raise exactly what these raise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from serving.protocol.datatypes import NUMPY_DTYPES

Span = tuple[int, int, int]  # (input index, start, end): body[start:end] is one `data` array

# Every V2 datatype but BYTES has a numeric JSON form.
_DTYPES: dict[str, np.dtype] = {k: v for k, v in NUMPY_DTYPES.items() if k != "BYTES"}
NUMERIC_DATATYPES: frozenset[str] = frozenset(_DTYPES)
_INT_RANGES = {
    k: (int(np.iinfo(v).min), int(np.iinfo(v).max)) for k, v in _DTYPES.items() if v.kind in "iu"
}
_KIND_NAMES = {"b": "bool", "i": "int", "u": "int", "f": "float", "U": "str", "O": "null or object"}
_WHITESPACE = b" \t\n\r"  # JSON's four whitespace bytes, nothing else
_MAX_DEPTH = 1024  # orjson refuses deeper documents anyway: leave those to it
RAGGED = "data is ragged: nested lists have different lengths"

# What the scanner knows about the object or array it is inside.
_OTHER, _TOP, _INPUTS, _INPUT = range(4)
# Which key's value comes next.
_NO_KEY, _INPUTS_KEY, _DATA_KEY = range(3)
# `_numeric_array_end` results that are not an offset.
_NOT_NUMERIC, _TRUNCATED = -1, -2


def _skip_ws(body: bytes, i: int) -> int:
    while i < len(body) and body[i] in _WHITESPACE:
        i += 1
    return i


def _string_end(body: bytes, i: int) -> int:
    """Offset of the quote closing the string opened at body[i], or -1 if it never closes."""
    j = i + 1
    while j < len(body):
        c = body[j]
        if c == 0x5C:  # backslash: the next byte is escaped, whatever it is
            j += 2
        elif c == 0x22:
            return j
        else:
            j += 1
    return -1


def _numeric_array_end(body: bytes, i: int) -> int:
    """Offset just past the array opened at body[i] if it holds no string or object."""
    depth = 0
    for j in range(i, len(body)):
        c = body[j]
        if c == 0x5B:
            depth += 1
        elif c == 0x5D:
            depth -= 1
            if depth == 0:
                return j + 1
        elif c in b'"{}':  # BYTES data or junk: the skeleton keeps it and orjson judges it
            return _NOT_NUMERIC
    return _TRUNCATED


_ABORT = -1  # a scanner step's answer for "give up: let orjson parse the whole body"


class _Splitter:
    """The scanner behind `split_tensor_data`: one method per kind of byte, each returning the
    offset to go on from (or _ABORT)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.stack: list[tuple[int, int]] = []  # (opening byte, context) of each open container
        self.spans: list[Span] = []
        self.key = _NO_KEY
        self.expect_key = False  # in an object, after `{` or `,`: the next string is a key
        self.seen_inputs = self.seen_data = False
        self.index = 0  # element count in "inputs"
        self.input_index = 0  # index of the input object we are in

    def scan(self) -> list[Span] | None:
        body, n = self.body, len(self.body)
        i = _skip_ws(body, 0)
        if i >= n or body[i] != 0x7B:
            return None
        while i < n:
            c = body[i]
            if c in _WHITESPACE or c == 0x3A:  # `:` keeps `key` for the value that follows
                i += 1
                continue
            if c == 0x22:
                i = self._string(i)
            elif c == 0x5B and self.key == _DATA_KEY:
                i = self._data(i)
            elif c in (0x7B, 0x5B):
                i = self._open(c, i)
            elif c in (0x5D, 0x7D):
                i = self._close(c, i)
                if i != _ABORT and not self.stack:
                    break
            elif c == 0x2C:
                i = self._comma(i)
            else:  # a byte of a number, literal or junk: orjson judges the skeleton
                i += 1
            if i == _ABORT:
                return None
        if self.stack or _skip_ws(body, i) != n:
            return None
        return self.spans

    def _string(self, i: int) -> int:
        j = _string_end(self.body, i)
        if j < 0:
            return _ABORT
        ctx = self.stack[-1][1]
        key = _NO_KEY
        if self.expect_key and ctx in (_TOP, _INPUT):
            name = self.body[i + 1 : j]
            if b"\\" in name:
                return _ABORT
            if ctx == _TOP and name == b"inputs":
                if self.seen_inputs:
                    return _ABORT
                self.seen_inputs, key = True, _INPUTS_KEY
            elif ctx == _INPUT and name == b"data":
                if self.seen_data:
                    return _ABORT
                self.seen_data, key = True, _DATA_KEY
        self.key = key
        self.expect_key = False
        return j + 1

    def _data(self, i: int) -> int:
        end = _numeric_array_end(self.body, i)
        if end == _TRUNCATED:
            return _ABORT
        self.key = _NO_KEY
        if end != _NOT_NUMERIC:
            self.spans.append((self.input_index, i, end))
            return end
        if len(self.stack) >= _MAX_DEPTH:
            return _ABORT
        self.stack.append((0x5B, _OTHER))  # not numeric: scan it like any other array
        return i + 1

    def _open(self, c: int, i: int) -> int:
        stack = self.stack
        if len(stack) >= _MAX_DEPTH:
            return _ABORT
        if not stack:
            ctx = _TOP
        elif c == 0x5B and self.key == _INPUTS_KEY:
            ctx, self.index = _INPUTS, 0
        elif c == 0x7B and stack[-1][1] == _INPUTS:
            ctx, self.input_index, self.seen_data = _INPUT, self.index, False
        else:
            ctx = _OTHER
        stack.append((c, ctx))
        self.key = _NO_KEY
        self.expect_key = c == 0x7B
        return i + 1

    def _close(self, c: int, i: int) -> int:
        if not self.stack or self.stack[-1][0] != c - 2:  # `]` and `}` are their opener + 2
            return _ABORT
        self.stack.pop()
        self.key = _NO_KEY
        self.expect_key = False
        return i + 1

    def _comma(self, i: int) -> int:
        opener, ctx = self.stack[-1]
        if ctx == _INPUTS:
            self.index += 1
        self.expect_key = opener == 0x7B
        self.key = _NO_KEY
        return i + 1


def split_tensor_data(body: bytes) -> tuple[bytes, list[Span]] | None:
    """Cut the inputs' numeric `data` arrays out of a V2 request: (skeleton, spans), or None.

    Each array value of a key `"data"` in an element of the top-level `"inputs"` array that holds
    no string or object is replaced by `null` in the skeleton and reported as a span. None means
    "parse the whole body with orjson": not an object, unbalanced, truncated, trailing bytes,
    nested deeper than 1024, or a duplicate or escaped key where `inputs` or `data` could hide
    (orjson keeps the last duplicate; escapes could spell either name).
    """
    if not isinstance(body, bytes):
        raise TypeError(f"body must be bytes, not {type(body).__name__}")
    spans = _Splitter(body).scan()
    if spans is None:
        return None
    if not spans:
        return body, spans
    pieces: list[bytes] = []
    prev = 0
    for _, start, end in spans:
        pieces += (body[prev:start], b"null")
        prev = end
    pieces.append(body[prev:])
    return b"".join(pieces), spans


def _kind_name(arr: np.ndarray) -> str:
    return _KIND_NAMES.get(arr.dtype.kind, arr.dtype.name)


def finish_numbers(arr: np.ndarray, datatype: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """Check the array numpy inferred from JSON data against `datatype`; (flat cast, shape).

    Shared by both implementations of `decode_json_numbers`: the compiled one builds the same
    inferred array straight from the bytes, then hands it here.
    """
    dtype = _DTYPES[datatype]
    kind = arr.dtype.kind
    if arr.size:  # `[]` infers float64; an empty tensor of any datatype is fine
        if dtype.kind == "b":
            if kind != "b":
                raise ValueError(f"data must hold true/false for BOOL, got {_kind_name(arr)}")
        elif dtype.kind in "iu":
            if kind not in "iu":
                raise ValueError(f"data must hold integers for {datatype}, got {_kind_name(arr)}")
            low, high = _INT_RANGES[datatype]
            # already of the datatype (INT64, as numpy infers JSON integers): in range by type
            if arr.dtype != dtype and (arr.min() < low or arr.max() > high):
                raise ValueError(f"data has out-of-range values for {datatype}")
        elif kind not in "iuf":
            raise ValueError(f"data must hold numbers for {datatype}, got {_kind_name(arr)}")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
        out = arr.astype(dtype).ravel()
    # JSON numbers are finite (orjson rejects 1e400), so inf here is a value too big for FP16/FP32.
    if dtype.kind == "f" and dtype.itemsize < 8 and out.size and not np.isfinite(out).all():
        raise ValueError(f"data has out-of-range values for {datatype}")
    return out, arr.shape


def decode_json_numbers(
    body: bytes, start: int, end: int, datatype: str
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Parse the JSON array body[start:end] into a flat array of `datatype`, and its shape."""
    if datatype not in _DTYPES:
        raise ValueError(f"datatype {datatype!r} has no numeric JSON form")
    try:
        obj = orjson.loads(body[start:end])
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"data is not valid JSON: {exc}") from None
    if not isinstance(obj, list):
        raise ValueError(f"data must be a JSON array, got {type(obj).__name__}")
    try:
        arr = np.array(obj)
    except ValueError:  # inhomogeneous shape, or more than numpy's 64 dimensions
        raise ValueError(RAGGED) from None
    return finish_numbers(arr, datatype)


def numbers_from_list(data: object, datatype: str) -> np.ndarray | None:
    """The compiled fast path for small JSON tensors has no separate spec: its twin always says
    "take the general path" (`np.array` + `finish_numbers`), whose result it must equal."""
    return None


def plain_input(
    item: object,
) -> tuple[str, str, tuple[int, ...], np.ndarray, dict[str, object]] | None:
    """The compiled fast path for one JSON input in its plain form has no separate spec either:
    its twin always says "take the general path" (`v2._decode_input`), whose Tensor it must
    equal."""
    return None


def plain_inputs(items: object, tensor: object, pd_json: str) -> list[Any] | None:
    """The compiled one-call path for a request's inputs: its twin always declines too (the
    per-input path, whose tensors it must equal)."""
    del items, tensor, pd_json  # the compiled kernel's parameters, unused by a twin that declines
    return None

