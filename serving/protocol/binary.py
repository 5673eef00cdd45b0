"""Triton's binary tensor data extension: raw little-endian tensors after the JSON header."""

from __future__ import annotations

import struct

import numpy as np

from serving.errors import BadRequest
from serving.protocol.datatypes import ITEMSIZE, NUMPY_DTYPES

_U32 = struct.Struct("<I")


def decode_bytes_elements(buf: memoryview | bytes, count: int, name: str) -> np.ndarray:
    """BYTES tensor: each element is a 4-byte little-endian length, then that many bytes.

    Elements become `str`: ONNX string tensors hold UTF-8 text (ONNX Runtime turns a `bytes`
    object into its repr), so bytes that are not UTF-8 are refused here with a 400.
    """
    out = np.empty(count, dtype=object)
    pos, end = 0, len(buf)
    for i in range(count):
        if pos + 4 > end:
            raise BadRequest(f"input {name!r}: binary BYTES data ends inside element {i}")
        (n,) = _U32.unpack_from(buf, pos)
        pos += 4
        if pos + n > end:
            raise BadRequest(f"input {name!r}: BYTES element {i} says {n} bytes, past the end")
        try:
            out[i] = str(buf[pos : pos + n], "utf-8")
        except UnicodeDecodeError:
            raise BadRequest(
                f"input {name!r}: BYTES element {i} is not UTF-8 text (ONNX strings are UTF-8)"
            ) from None
        pos += n
    if pos != end:
        raise BadRequest(
            f"input {name!r}: binary BYTES data has {end - pos} bytes after {count} elements"
        )
    return out


def encode_bytes_elements(arr: np.ndarray) -> bytes:
    """The inverse of decode_bytes_elements (str elements are written as UTF-8)."""
    parts = []
    for item in arr.ravel():
        b = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_U32.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def decode_binary_tensor(
    buf: memoryview | bytes, datatype: str, count: int, name: str
) -> np.ndarray:
    """A flat numpy array of `count` elements from one tensor's binary data."""
    if datatype == "BYTES":
        return decode_bytes_elements(buf, count, name)
    size = ITEMSIZE[datatype]
    if len(buf) != count * size:
        raise BadRequest(
            f"input {name!r}: binary data has {len(buf)} bytes, shape needs "
            f"{count} x {size} = {count * size} for {datatype}"
        )
    arr = np.frombuffer(buf, dtype=NUMPY_DTYPES[datatype], count=count)
    if datatype == "BOOL" and count and arr.view(np.uint8).max() > 1:
        raise BadRequest(f"input {name!r}: BOOL binary data must be bytes 0 or 1")
    return arr


def encode_binary_tensor(arr: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return encode_bytes_elements(arr)
    return np.ascontiguousarray(arr, dtype=NUMPY_DTYPES[datatype]).tobytes()
