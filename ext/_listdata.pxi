# Small JSON tensors: after orjson has built the document, turn a `data` list of Python floats
# and ints straight into a float buffer. For one-row requests numpy's type discovery plus the
# cast and overflow checks cost more than everything else in decoding the request.

from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.long cimport PyLong_CheckExact

cdef double _F32_OVERFLOW = 340282356779733661637539395458142568448.0  # 2**128 - 2**103
cdef double _EXACT_INT = 9007199254740992.0  # 2**53: ints below convert to double exactly
cdef int _LIST_MAX_DEPTH = 32
cdef Py_ssize_t _LIST_MAX_COUNT = 1 << 20  # bigger tensors take the general path


cdef Py_ssize_t _list_shape(object data, Py_ssize_t* dims, int* ndim) except -2:
    """Shape from the first elements; -1 when it is not a non-empty list of lists/numbers or
    holds more than _LIST_MAX_COUNT elements (checked before multiplying: the dimensions come
    from the client, and a signed overflow is undefined behaviour in C)."""
    cdef Py_ssize_t count = 1, n
    cdef int d = 0
    cdef object cur = data
    while type(cur) is list:
        if d >= _LIST_MAX_DEPTH:
            return -1
        n = PyList_GET_SIZE(cur)
        if n == 0:
            return -1
        if n > _LIST_MAX_COUNT // count:
            return -1
        dims[d] = n
        d += 1
        count *= n
        cur = <object>PyList_GET_ITEM(cur, 0)
    ndim[0] = d
    return count


cdef int _fill(object lst, int depth, int ndim, Py_ssize_t* dims, double* out, Py_ssize_t* pos,
               Py_ssize_t count, bint f32) except -1:
    """Write the numbers of a rectangular nested list; 1 on success, 0 to fall back."""
    cdef Py_ssize_t i, n
    cdef object x
    cdef double v
    if type(lst) is not list:
        return 0
    n = PyList_GET_SIZE(lst)
    if n != dims[depth]:
        return 0
    if depth + 1 < ndim:
        for i in range(n):
            if not _fill(<object>PyList_GET_ITEM(lst, i), depth + 1, ndim, dims, out, pos,
                         count, f32):
                return 0
        return 1
    if pos[0] + n > count:
        return 0
    for i in range(n):
        x = <object>PyList_GET_ITEM(lst, i)
        if PyFloat_CheckExact(x):
            v = PyFloat_AS_DOUBLE(x)
        elif PyLong_CheckExact(x):  # exact int, never bool (its own type)
            v = <double>x
            if not (-_EXACT_INT < v < _EXACT_INT):
                return 0
        else:
            return 0
        if f32 and not (-_F32_OVERFLOW < v < _F32_OVERFLOW):
            return 0
        out[pos[0]] = v
        pos[0] += 1
    return 1


def numbers_from_list(object data, str datatype):
    """A flat FP32/FP64 array from a rectangular (nested) list of floats and ints, or None to
    say "take the general path" (np.array + the shared checks), which handles everything else
    and owns every error message."""
    cdef Py_ssize_t dims[32]
    cdef int ndim = 0
    cdef Py_ssize_t count, pos = 0, i
    cdef bint f32
    cdef double* tmp
    cdef float[::1] o32
    cdef double[::1] o64
    if datatype == "FP32":
        f32 = True
    elif datatype == "FP64":
        f32 = False
    else:
        return None
    count = _list_shape(data, dims, &ndim)
    if count <= 0:
        return None
    out = np.empty(count, dtype=np.float64)
    o64 = out
    if not _fill(data, 0, ndim, dims, &o64[0], &pos, count, f32) or pos != count:
        return None
    if not f32:
        return out
    out32 = np.empty(count, dtype=np.float32)
    o32 = out32
    for i in range(count):
        o32[i] = <float>o64[i]
    return out32
