"""V2 datatypes and their numpy and ONNX counterparts."""

from __future__ import annotations

import numpy as np

from serving.errors import BadRequest

# V2 datatype -> numpy dtype (little-endian, as the binary extension specifies).
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

DATATYPES: frozenset[str] = frozenset(NUMPY_DTYPES)

# ONNX Runtime's type strings (`NodeArg.type`) -> V2 datatype.
_FROM_ONNX: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

ITEMSIZE: dict[str, int] = {k: v.itemsize for k, v in NUMPY_DTYPES.items() if k != "BYTES"}


def from_onnx(type_str: str) -> str:
    """V2 datatype for an ONNX Runtime type string such as `tensor(float)`."""
    try:
        return _FROM_ONNX[type_str]
    except KeyError:
        raise ValueError(f"ONNX type {type_str} has no V2 datatype") from None


def numpy_dtype(datatype: str) -> np.dtype:
    """numpy dtype for a V2 datatype; a clear 400 for an unknown one."""
    try:
        return NUMPY_DTYPES[datatype]
    except (KeyError, TypeError):
        raise BadRequest(
            f"unknown datatype {datatype!r}; expected one of {', '.join(sorted(DATATYPES))}"
        ) from None
