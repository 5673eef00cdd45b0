# Small JSON tensors: after orjson has built the document, turn a `data` list of Python floats
# and ints straight into a float buffer. For one-row requests numpy's type discovery plus the
# cast and overflow checks cost more than everything else in decoding the request.

from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.long cimport PyLong_CheckExact
from cpython.unicode cimport PyUnicode_CheckExact

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


cdef int _fill_ints(object lst, int depth, int ndim, Py_ssize_t* dims, int64_t* out,
                    Py_ssize_t* pos, Py_ssize_t count) except -1:
    """As _fill, for INT64: exact ints within int64 only (numpy infers int64 for those)."""
    cdef Py_ssize_t i, n
    cdef object x
    cdef long long v
    cdef int overflow = 0
    if type(lst) is not list:
        return 0
    n = PyList_GET_SIZE(lst)
    if n != dims[depth]:
        return 0
    if depth + 1 < ndim:
        for i in range(n):
            if not _fill_ints(<object>PyList_GET_ITEM(lst, i), depth + 1, ndim, dims, out, pos,
                              count):
                return 0
        return 1
    if pos[0] + n > count:
        return 0
    for i in range(n):
        x = <object>PyList_GET_ITEM(lst, i)
        if not PyLong_CheckExact(x):  # floats, bools (their own type), anything else
            return 0
        v = PyLong_AsLongLongAndOverflow(x, &overflow)
        if overflow:
            return 0
        out[pos[0]] = v
        pos[0] += 1
    return 1


cdef object _F32 = np.dtype(np.float32)
cdef object _F64 = np.dtype(np.float64)
cdef object _I64 = np.dtype(np.int64)
cdef enum:
    _STACK_VALUES = 256  # small tensors convert through the stack, bigger ones a heap buffer


cdef object _empty = np.empty


cdef object _new_flat(Py_ssize_t count, object dtype, void** data):
    """np.empty(count, dtype) and its data pointer (the array keeps its memory alive)."""
    cdef Py_buffer view
    arr = _empty(count, dtype)
    PyObject_GetBuffer(arr, &view, PyBUF_RECORDS)
    data[0] = view.buf
    PyBuffer_Release(&view)
    return arr


def numbers_from_list(object data, str datatype):
    """A flat FP32/FP64 array from a rectangular (nested) list of floats and ints, or INT64 from
    one of ints, or None to say "take the general path" (np.array + the shared checks), which
    handles everything else and owns every error message."""
    return _numbers_from_list(data, datatype, -1)


cdef object _numbers_from_list(object data, str datatype, Py_ssize_t want):
    """numbers_from_list, declining also when `want` >= 0 elements are not what `data` holds."""
    cdef Py_ssize_t dims[32]
    cdef int ndim = 0
    cdef Py_ssize_t count, pos = 0, i
    cdef double stack[_STACK_VALUES]
    cdef double* tmp
    cdef void* buf
    cdef float* o32
    cdef int ok
    if datatype != "FP32" and datatype != "FP64" and datatype != "INT64":
        return None
    count = _list_shape(data, dims, &ndim)
    if count <= 0 or want >= 0 and count != want:
        return None
    if datatype == "INT64":
        out = _new_flat(count, _I64, &buf)
        if not _fill_ints(data, 0, ndim, dims, <int64_t*>buf, &pos, count) or pos != count:
            return None
        return out
    if datatype == "FP64":
        out = _new_flat(count, _F64, &buf)
        if not _fill(data, 0, ndim, dims, <double*>buf, &pos, count, False) or pos != count:
            return None
        return out
    # FP32: checked as doubles (the overflow test needs them), then narrowed
    tmp = stack
    if count > _STACK_VALUES:
        tmp = <double*>PyMem_Malloc(count * sizeof(double))
        if tmp == NULL:
            raise MemoryError()
    try:
        ok = _fill(data, 0, ndim, dims, tmp, &pos, count, True) and pos == count
        if not ok:
            return None
        out = _new_flat(count, _F32, &buf)
        o32 = <float*>buf
        for i in range(count):
            o32[i] = <float>tmp[i]
        return out
    finally:
        if tmp != stack:
            PyMem_Free(tmp)


cdef object _strings_from_list(object data, Py_ssize_t count):
    """A flat object array of `count` strings from a flat list of exact str, or a list of
    equally long lists of them; None otherwise (the general path flattens the rest)."""
    cdef Py_ssize_t i, j, n = PyList_GET_SIZE(data), width
    cdef object x, row
    cdef list flat
    if n == 0:
        return None
    if type(<object>PyList_GET_ITEM(data, 0)) is not list:
        if n != count:
            return None
        for i in range(n):
            if not PyUnicode_CheckExact(<object>PyList_GET_ITEM(data, i)):
                return None
        return np.array(data, dtype=object)
    width = PyList_GET_SIZE(<object>PyList_GET_ITEM(data, 0))
    if width == 0 or n * width != count:  # count <= _LIST_MAX_COUNT: no overflow here
        return None
    flat = [None] * count
    for i in range(n):
        row = <object>PyList_GET_ITEM(data, i)
        if type(row) is not list or PyList_GET_SIZE(row) != width:
            return None
        for j in range(width):
            x = <object>PyList_GET_ITEM(row, j)
            if not PyUnicode_CheckExact(x):
                return None
            flat[i * width + j] = x
    return np.array(flat, dtype=object)


def plain_input(object item):
    """(name, datatype, shape, flat data, parameters) of a V2 JSON input in its plain form, or
    None to say "take the general path" (which owns every error message and every other form).

    Plain: a dict of name (a non-empty str), datatype (FP32, FP64, INT64 or BYTES), shape (at
    most 32 ints >= 0, at least one element, at most 2**20), data (a list that
    `numbers_from_list` takes, or strings flat or in equal rows) holding exactly the shape's
    element count, and optionally parameters (a dict without binary_data_size: the caller
    applies a content type)."""
    cdef Py_ssize_t count = 1, ndim, i, keys = 4
    cdef long long d
    cdef int overflow = 0
    cdef object x
    cdef dict doc
    cdef str dt
    if type(item) is not dict:
        return None
    doc = <dict>item
    name = doc.get("name")
    datatype = doc.get("datatype")
    shape = doc.get("shape")
    data = doc.get("data")
    params = doc.get("parameters")
    if params is not None:
        if type(params) is not dict or "binary_data_size" in <dict>params:
            return None
        keys = 5
    if len(doc) != keys or type(name) is not str or not name or type(datatype) is not str:
        return None
    if type(shape) is not list or type(data) is not list:
        return None
    dt = <str>datatype
    ndim = PyList_GET_SIZE(shape)
    if ndim > _LIST_MAX_DEPTH:
        return None
    for i in range(ndim):
        x = <object>PyList_GET_ITEM(shape, i)
        if not PyLong_CheckExact(x):  # bools are not: their own type
            return None
        d = PyLong_AsLongLongAndOverflow(x, &overflow)
        if overflow or d <= 0 or d > _LIST_MAX_COUNT // count:
            return None
        count *= <Py_ssize_t>d
    if dt == "BYTES":
        arr = _strings_from_list(data, count)
    elif dt == "FP32" or dt == "FP64" or dt == "INT64":
        arr = _numbers_from_list(data, dt, count)
    else:
        return None
    if arr is None:
        return None
    return name, dt, tuple(shape), arr, {} if params is None else params


def plain_inputs(object items, object tensor, str pd_json):
    """`tensor(name, datatype, shape, data, parameters, True)` for every item of the list
    `items` when each is in the plain form of `plain_input` (a BYTES one without the
    `pd_json` content type, which the caller unwraps), or None: the per-input path then
    decodes them, and words any error. One call per request instead of one per input."""
    cdef Py_ssize_t i, n
    cdef list out
    if type(items) is not list:
        return None
    n = PyList_GET_SIZE(items)
    out = [None] * n
    for i in range(n):
        plain = plain_input(<object>PyList_GET_ITEM(items, i))
        if plain is None:
            return None
        name, datatype, shape, data, params = plain
        if params and datatype == "BYTES" and (<dict>params).get("content_type") == pd_json:
            return None
        out[i] = tensor(name, datatype, shape, data, params, True)
    return out


def ordered_feeds(object tensors, tuple order, bint allow_nonfinite):
    """serving.signature.ordered_feeds compiled (that twin is the spec): the feeds and rows of
    a batched model's usual request, every input in the model's order, or None."""
    cdef Py_ssize_t i, j, n = len(order), rank
    cdef tuple spec, shape, tail
    cdef dict feeds
    if type(tensors) is not list or n == 0 or PyList_GET_SIZE(tensors) != n:
        return None
    first = (<object>PyList_GET_ITEM(tensors, 0)).shape
    if type(first) is not tuple:
        return None
    rows = (<tuple>first)[0] if len(<tuple>first) else 0
    feeds = {}
    for i in range(n):
        t = <object>PyList_GET_ITEM(tensors, i)
        spec = <tuple>order[i]
        name, datatype, rank, tail = spec
        s = t.shape
        if type(s) is not tuple:
            return None
        shape = <tuple>s
        if (t.name != name or t.datatype != datatype or len(shape) != rank
                or shape[0] != rows or len(tail) != rank - 1):
            return None
        for j in range(1, rank):
            if shape[j] != tail[j - 1]:
                return None
        data = t.data
        if not (t.finite or allow_nonfinite) and data.dtype.kind == "f" \
                and not np.isfinite(data).all():
            return None
        feeds[name] = data.reshape(shape)
    return (feeds, rows) if rows else None
