"""The hot path in C: batch row gather/scatter, JSON tensor data parsing, and the payload
log's capture copy.

Each function has a pure-Python twin that is its spec (serving/batching/_reference.py,
serving/protocol/_reference.py); the tests hold both to the same results and errors. Inputs the
kernels do not handle themselves (wrong types, malformed or exotic data) are handed to the twin,
so every error a caller sees is the twin's.

Built with boundscheck and wraparound off: every index here is checked by hand.
"""

from cpython.buffer cimport (
    PyBUF_RECORDS,
    PyBUF_RECORDS_RO,
    PyBuffer_IsContiguous,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy, memmove

import numpy as np

from serving.batching import _reference as _rows_reference
from serving.payload import _reference as _payload_reference
from serving.protocol import _reference as _json_reference

cdef type ndarray = np.ndarray

include "_rows.pxi"
include "_floats.pxi"
include "_jsondata.pxi"
include "_listdata.pxi"
include "_payload.pxi"
