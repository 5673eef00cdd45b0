# JSON tensor data kernels for serving.protocol; the spec is serving/protocol/_reference.py.
#
# split_tensor_data keeps the inputs' big numeric `data` arrays out of orjson (which would build
# a Python float per number), and decode_json_numbers parses each one straight into a typed
# buffer. Both bail out to the twin on anything they are not sure of.

from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from libc.string cimport memchr, memcmp

cdef extern from "Python.h":
    bytes PyBytes_FromStringAndSize_NULL "PyBytes_FromStringAndSize" (void* v, Py_ssize_t n)

cdef extern from *:
    """
    /* Nonzero if one of the 8 bytes in v may be [ ] { } or ": the four brackets are the bytes
       b with (b & 0xD9) == 0x59 (so are Y _ y DEL: the caller checks each byte then). */
    static inline uint64_t serving_may_end_array(uint64_t v) {
        uint64_t a = (v & 0xD9D9D9D9D9D9D9D9ULL) ^ 0x5959595959595959ULL;
        uint64_t q = v ^ 0x2222222222222222ULL;
        return ((a - 0x0101010101010101ULL) & ~a & 0x8080808080808080ULL)
             | ((q - 0x0101010101010101ULL) & ~q & 0x8080808080808080ULL);  /* a zero byte */
    }
    """
    uint64_t serving_may_end_array(uint64_t v) noexcept nogil

cdef enum:
    _MAX_DEPTH = 1024  # as the twin: deeper bodies are left to orjson

    # What the scanner knows about the object or array it is inside.
    _CTX_OTHER = 0
    _CTX_TOP = 1
    _CTX_INPUTS = 2
    _CTX_INPUT = 3

    # Which key's value comes next.
    _NO_KEY = 0
    _INPUTS_KEY = 1
    _DATA_KEY = 2

    # _numeric_array_end results that are not an offset.
    _NOT_NUMERIC = -1
    _TRUNCATED = -2

    _MAX_DIMS = 32  # numpy allows 64; deeper data goes to the twin

    # Where decode is inside an array.
    _S_FIRST = 0  # just after `[`: a value or `]`
    _S_VALUE = 1  # just after `,`: a value
    _S_AFTER = 2  # just after a value: `,` or `]`

# For _numeric_array_end: 1 opens, 2 closes, 3 means strings or objects (not numeric data).
cdef unsigned char _ARRAY_BYTES[256]
_ARRAY_BYTES[0x5B] = 1  # [
_ARRAY_BYTES[0x5D] = 2  # ]
_ARRAY_BYTES[0x22] = 3  # "
_ARRAY_BYTES[0x7B] = 3  # {
_ARRAY_BYTES[0x7D] = 3  # }

NUMERIC_DATATYPES = _json_reference.NUMERIC_DATATYPES


cdef inline bint _is_ws(unsigned char c) noexcept nogil:
    return c == b" " or c == b"\n" or c == b"\r" or c == b"\t"


cdef inline Py_ssize_t _skip_ws(const unsigned char* s, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    while i < n and _is_ws(s[i]):
        i += 1
    return i


cdef Py_ssize_t _string_end(const unsigned char* s, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    """Offset of the quote closing the string opened at s[i], or -1 if it never closes."""
    cdef Py_ssize_t j = i + 1
    while j < n:
        if s[j] == b"\\":  # the next byte is escaped, whatever it is
            j += 2
        elif s[j] == b'"':
            return j
        else:
            j += 1
    return -1


cdef Py_ssize_t _numeric_array_end(
    const unsigned char* s, Py_ssize_t n, Py_ssize_t i
) noexcept nogil:
    """Offset just past the array opened at s[i] if it holds no string or object."""
    cdef Py_ssize_t depth = 0, j = i, stop
    cdef unsigned char kind
    while j < n:
        # Numbers and commas are nearly all of it: skip them eight bytes at a time.
        if n - j >= 8 and not serving_may_end_array(serving_load8(s + j)):
            j += 8
            continue
        stop = min(j + 8, n)
        while j < stop:
            kind = _ARRAY_BYTES[s[j]]
            if kind == 1:
                depth += 1
            elif kind == 2:
                depth -= 1
                if depth == 0:
                    return j + 1
            elif kind == 3:
                return _NOT_NUMERIC
            j += 1
    return _TRUNCATED


cdef inline bint _is_name(
    const unsigned char* s, Py_ssize_t i, Py_ssize_t j, const char* name, Py_ssize_t size
) noexcept nogil:
    """Whether the string s[i:j+1] (quotes included) is exactly "name"."""
    return j - i - 1 == size and memcmp(s + i + 1, name, size) == 0


def split_tensor_data(object body):
    """Cut the inputs' numeric `data` arrays out of a V2 request: (skeleton, spans), or None."""
    if type(body) is not bytes:
        return _json_reference.split_tensor_data(body)
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(body)
    cdef Py_ssize_t n = len(body), i, j, end, start, prev, size, index = 0, input_index = 0
    cdef Py_ssize_t depth = 0  # open objects and arrays: the stack below holds [0, depth)
    cdef unsigned char opener[_MAX_DEPTH]
    cdef unsigned char context[_MAX_DEPTH]
    cdef unsigned char c, ctx
    cdef int key = _NO_KEY
    cdef bint expect_key = False, seen_inputs = False, seen_data = False
    cdef list spans = []
    cdef char* dst
    i = _skip_ws(s, n, 0)
    if i >= n or s[i] != b"{":
        return None
    while i < n:
        c = s[i]
        if _is_ws(c) or c == b":":  # `:` keeps `key` for the value that follows
            i += 1
        elif c == b'"':
            j = _string_end(s, n, i)
            if j < 0:
                return None
            ctx = context[depth - 1]  # depth >= 1: the first byte scanned opened the top object
            if expect_key and (ctx == _CTX_TOP or ctx == _CTX_INPUT):
                if memchr(s + i + 1, b"\\", j - i - 1) != NULL:
                    return None  # an escape could spell "inputs" or "data"
                if ctx == _CTX_TOP and _is_name(s, i, j, b"inputs", 6):
                    if seen_inputs:
                        return None
                    seen_inputs = True
                    key = _INPUTS_KEY
                elif ctx == _CTX_INPUT and _is_name(s, i, j, b"data", 4):
                    if seen_data:
                        return None
                    seen_data = True
                    key = _DATA_KEY
                else:
                    key = _NO_KEY
            else:
                key = _NO_KEY
            expect_key = False
            i = j + 1
        elif c == b"[" and key == _DATA_KEY:
            end = _numeric_array_end(s, n, i)
            if end == _TRUNCATED:
                return None
            key = _NO_KEY
            if end != _NOT_NUMERIC:
                spans.append((input_index, i, end))
                i = end
                continue
            if depth >= _MAX_DEPTH:
                return None
            opener[depth] = c  # not numeric: scan it like any other array
            context[depth] = _CTX_OTHER
            depth += 1
            i += 1
        elif c == b"{" or c == b"[":
            if depth >= _MAX_DEPTH:
                return None
            if depth == 0:
                ctx = _CTX_TOP
            elif c == b"[" and key == _INPUTS_KEY:
                ctx = _CTX_INPUTS
                index = 0
            elif c == b"{" and context[depth - 1] == _CTX_INPUTS:
                ctx = _CTX_INPUT
                input_index = index
                seen_data = False
            else:
                ctx = _CTX_OTHER
            opener[depth] = c
            context[depth] = ctx
            depth += 1
            key = _NO_KEY
            expect_key = c == b"{"
            i += 1
        elif c == b"]" or c == b"}":
            if depth == 0 or opener[depth - 1] != c - 2:  # `]` and `}` are their opener + 2
                return None
            depth -= 1
            key = _NO_KEY
            expect_key = False
            i += 1
            if depth == 0:
                break
        elif c == b",":
            if context[depth - 1] == _CTX_INPUTS:
                index += 1
            expect_key = opener[depth - 1] == b"{"
            key = _NO_KEY
            i += 1
        else:  # a byte of a number, literal or junk: orjson judges the skeleton
            i += 1
    if depth or _skip_ws(s, n, i) != n:
        return None
    if not spans:
        return body, spans
    size = n
    for _, start, end in spans:
        size -= end - start - 4
    skeleton = PyBytes_FromStringAndSize_NULL(NULL, size)
    dst = PyBytes_AS_STRING(skeleton)
    prev = 0
    for _, start, end in spans:
        memcpy(dst, s + prev, start - prev)
        dst += start - prev
        memcpy(dst, b"null", 4)
        dst += 4
        prev = end
    memcpy(dst, s + prev, n - prev)
    return skeleton, spans


cdef union _Slot:
    int64_t i
    double d


cdef struct _Parsed:
    _Slot* values  # PyMem_Raw: grown without the GIL
    Py_ssize_t size
    Py_ssize_t capacity
    bint any_float  # then every slot holds .d, else every slot holds .i
    int ndim
    Py_ssize_t shape[_MAX_DIMS + 1]  # shape[1..ndim]


cdef bint _grow(_Parsed* r) noexcept nogil:
    """Double the value buffer; False if memory ran out."""
    cdef Py_ssize_t capacity = r.capacity * 2
    cdef _Slot* grown
    if capacity > PY_SSIZE_T_MAX // <Py_ssize_t>sizeof(_Slot):
        return False
    grown = <_Slot*>PyMem_RawRealloc(r.values, capacity * sizeof(_Slot))
    if grown == NULL:
        return False
    r.values = grown
    r.capacity = capacity
    return True


cdef bint _scan_numbers(
    const unsigned char* p, const unsigned char* end, bint want_bool, _Parsed* r
) noexcept nogil:
    """Fill `r` with the rectangular JSON array [p, end) of numbers (or true/false): False if
    it is anything else (ragged, other values, malformed, too deep): the twin handles those."""
    cdef Py_ssize_t count[_MAX_DIMS + 1]  # elements so far in the open list at each depth
    cdef Py_ssize_t k, length, total
    cdef int depth = 1, state = _S_FIRST, kind
    cdef int64_t ival
    cdef double dval
    cdef unsigned char c
    r.ndim = -1  # set by the first leaf (or empty list): every leaf must sit that deep
    for k in range(_MAX_DIMS + 1):
        r.shape[k] = -1
    while p < end and _is_ws(p[0]):
        p += 1
    if p >= end or p[0] != b"[":
        return False
    p += 1
    count[1] = 0
    while True:
        while p < end and _is_ws(p[0]):
            p += 1
        if p >= end:
            return False
        c = p[0]
        if c == b"]":
            if state == _S_VALUE:
                return False  # a trailing comma
            length = count[depth]
            if length == 0 and r.ndim < 0:
                r.ndim = depth
            elif length == 0 and depth != r.ndim:
                return False
            # Every list at one depth must be as long as the first one closed there.
            if r.shape[depth] < 0:
                r.shape[depth] = length
            elif r.shape[depth] != length:
                return False
            p += 1
            depth -= 1
            if depth == 0:
                break
            count[depth] += 1
            state = _S_AFTER
            continue
        if state == _S_AFTER:
            if c != b",":
                return False
            state = _S_VALUE
            p += 1
            continue
        if c == b"[":
            if depth == _MAX_DIMS or (r.ndim >= 0 and depth >= r.ndim):
                return False
            depth += 1
            count[depth] = 0
            state = _S_FIRST
            p += 1
            continue
        if r.ndim < 0:
            r.ndim = depth
        elif depth != r.ndim:
            return False
        if r.size == r.capacity and not _grow(r):
            return False
        if want_bool:
            if end - p >= 4 and memcmp(p, b"true", 4) == 0:
                r.values[r.size].i = 1
                p += 4
            elif end - p >= 5 and memcmp(p, b"false", 5) == 0:
                r.values[r.size].i = 0
                p += 5
            else:
                return False
        else:
            kind = _parse_number(p, end, &p, &ival, &dval)
            if kind == _INT:
                if r.any_float:
                    r.values[r.size].d = <double>ival  # as numpy converts ints in a float list
                else:
                    r.values[r.size].i = ival
            elif kind == _FLOAT:
                if not r.any_float:  # the first float: numpy would infer float64 for all
                    for k in range(r.size):
                        r.values[k].d = <double>r.values[k].i
                    r.any_float = True
                r.values[r.size].d = dval
            else:
                return False
        r.size += 1
        count[depth] += 1
        if p < end and p[0] == b",":  # the usual next byte: take it without another turn
            state = _S_VALUE
            p += 1
        else:
            state = _S_AFTER  # `]` or whitespace: the next turn sorts it out
    while p < end and _is_ws(p[0]):
        p += 1
    if p != end:
        return False  # trailing bytes
    total = 1
    for k in range(1, r.ndim + 1):
        total *= r.shape[k]
    return total == r.size


cdef object _parse_array(const unsigned char* p, Py_ssize_t n, bint want_bool):
    """np.array(orjson.loads(p[:n])) for the cases _scan_numbers takes; None otherwise."""
    cdef _Parsed r
    cdef bint ok
    cdef Py_buffer view
    r.size = 0
    r.any_float = False
    r.capacity = min(n // 8 + 16, n // 2 + 1)  # n // 2 + 1 values at most: "1,1,1"
    r.values = <_Slot*>PyMem_RawMalloc(r.capacity * sizeof(_Slot))
    if r.values == NULL:
        return None
    try:
        if n >= _NOGIL_BYTES:
            with nogil:
                ok = _scan_numbers(p, p + n, want_bool, &r)
        else:
            ok = _scan_numbers(p, p + n, want_bool, &r)
        if not ok:
            return None
        shape = tuple([r.shape[k] for k in range(1, r.ndim + 1)])
        # numpy infers float64 for no values, int64 for ints only, float64 once a float shows.
        arr = np.empty(r.size, np.float64 if r.any_float or r.size == 0 else np.int64)
        if r.size:
            PyObject_GetBuffer(arr, &view, PyBUF_RECORDS)
            memcpy(view.buf, r.values, r.size * sizeof(_Slot))
            PyBuffer_Release(&view)
        if want_bool and r.size:
            arr = arr.astype(np.bool_)
        return arr.reshape(shape)
    finally:
        PyMem_RawFree(r.values)


def decode_json_numbers(object body, object start, object end, object datatype):
    """Parse the JSON array body[start:end] into a flat array of `datatype`, and its shape."""
    if (
        type(body) is not bytes
        or type(start) is not int
        or type(end) is not int
        or type(datatype) is not str
        or datatype not in NUMERIC_DATATYPES
        or not 0 <= start <= end <= len(body)
    ):
        return _json_reference.decode_json_numbers(body, start, end, datatype)
    cdef Py_ssize_t a = start, b = end
    arr = _parse_array(<const unsigned char*>PyBytes_AS_STRING(body) + a, b - a, datatype == "BOOL")
    if arr is None:  # not plain numeric data: the twin parses it, or says what is wrong
        return _json_reference.decode_json_numbers(body, start, end, datatype)
    done = _finish_common(arr, datatype)
    if done is not None:
        return done
    return _json_reference.finish_numbers(arr, datatype)


cdef object _finish_common(object arr, str datatype):
    """finish_numbers for what tabular columns send (floats for FP32/FP64, ints for INT64),
    without numpy's per-call overhead; None for anything else, the twin's cases and errors."""
    cdef Py_buffer view
    cdef Py_ssize_t i, n = arr.size
    cdef const double* src
    cdef float* dst
    cdef void* buf
    cdef double v
    if n == 0:
        return None
    kind = arr.dtype.kind
    if datatype == "INT64" and kind == "i" or datatype == "FP64" and kind == "f":
        return arr.ravel(), arr.shape  # already of the datatype (int64, float64), contiguous
    if datatype != "FP32" or kind != "f":
        return None
    PyObject_GetBuffer(arr, &view, PyBUF_RECORDS_RO)
    try:
        src = <const double*>view.buf
        for i in range(n):
            v = src[i]
            if not (-_F32_OVERFLOW < v < _F32_OVERFLOW):
                return None  # the twin words the overflow
        out = _new_flat(n, _F32, &buf)
        dst = <float*>buf
        for i in range(n):
            dst[i] = <float>src[i]
        return out, arr.shape
    finally:
        PyBuffer_Release(&view)
