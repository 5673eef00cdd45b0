# The payload log's capture kernel; the spec is serving/payload/_reference.py.

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.dict cimport PyDict_Next
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_Compare
from libc.string cimport strcmp

cdef enum:
    _STACK_COLUMNS = 32  # a record of more columns goes to the spec


cdef bint _raw_fits(object value, tuple col, Py_ssize_t rows, Py_buffer* view):
    """Acquire value's buffer if it is the raw column's: its format and item size, `rows` rows
    of the column's row shape, C-contiguous. If not, False (none held)."""
    cdef tuple shape = <tuple>PyTuple_GET_ITEM(col, 3)
    cdef Py_ssize_t k, rank = PyTuple_GET_SIZE(shape)
    try:
        PyObject_GetBuffer(value, view, PyBUF_RECORDS_RO)
    except (BufferError, ValueError, TypeError):
        return False
    if (view.ndim == rank + 1 and view.shape[0] == rows and view.format != NULL
            and view.itemsize == <Py_ssize_t><object>PyTuple_GET_ITEM(col, 2)
            and strcmp(view.format, <bytes><object>PyTuple_GET_ITEM(col, 1)) == 0
            and PyBuffer_IsContiguous(view, b"C")):
        for k in range(rank):
            if view.shape[k + 1] != <Py_ssize_t><object>PyTuple_GET_ITEM(shape, k):
                break
        else:
            return True
    PyBuffer_Release(view)
    return False


cdef bint _fits_all(dict arrays, tuple layout, Py_ssize_t first, Py_ssize_t rows,
                    Py_buffer* views, bint* acquired, PyObject** values) except -1:
    """Whether the arrays are layout[first:first + len(arrays)]'s columns, acquiring each raw
    column's buffer (marked in `acquired`, released by the caller either way) and noting each
    array in `values` (borrowed: the caller's dicts hold them)."""
    cdef Py_ssize_t pos = 0, i = first
    cdef PyObject* key
    cdef PyObject* value
    cdef tuple col
    while PyDict_Next(arrays, &pos, &key, &value):
        col = <tuple>PyTuple_GET_ITEM(layout, i)
        name = <object>PyTuple_GET_ITEM(col, 0)
        if <object>key is not name and (type(<object>key) is not str
                                        or PyUnicode_Compare(<object>key, name) != 0):
            return False
        if type(<object>value) is not ndarray:
            return False
        values[i] = value
        if <object>PyTuple_GET_ITEM(col, 1) is not None:  # raw
            if not _raw_fits(<object>value, col, rows, &views[i]):
                return False
            acquired[i] = True
        i += 1
    return True


cdef Py_ssize_t _copy_record(tuple layout, object inputs, dict outputs,
                             Py_ssize_t rows) except -2:
    """copy_record for a tuple layout, a dict or None of inputs and a dict of outputs."""
    cdef Py_ssize_t n = PyTuple_GET_SIZE(<tuple>layout), held = 0, size, j
    cdef Py_ssize_t n_in = len(<dict>inputs) if inputs is not None else 0
    if n > _STACK_COLUMNS:
        return _payload_reference.copy_record(layout, inputs, outputs, rows)
    if n_in + len(<dict>outputs) != n:
        return -1
    cdef Py_buffer views[_STACK_COLUMNS]
    cdef bint acquired[_STACK_COLUMNS]
    cdef Py_ssize_t sizes[_STACK_COLUMNS]
    cdef Py_ssize_t k
    for j in range(n):
        acquired[j] = False
    cdef PyObject* values[_STACK_COLUMNS]
    try:
        if n_in and not _fits_all(<dict>inputs, <tuple>layout, 0, rows, views, acquired,
                                  values):
            return -1
        if not _fits_all(<dict>outputs, <tuple>layout, n_in, rows, views, acquired, values):
            return -1
        # Grow every raw column first, so a failure (a column's bytes still viewed by an
        # array, no memory) leaves the block as it was: a column just grown is not viewed.
        for j in range(n):
            if acquired[j] and views[j].len:
                data = <object>PyTuple_GET_ITEM(<tuple>PyTuple_GET_ITEM(<tuple>layout, j), 4)
                sizes[j] = PyByteArray_GET_SIZE(data)
                try:
                    PyByteArray_Resize(data, sizes[j] + views[j].len)
                except BaseException:
                    for k in range(j):
                        if acquired[k] and views[k].len:
                            PyByteArray_Resize(<object>PyTuple_GET_ITEM(
                                <tuple>PyTuple_GET_ITEM(<tuple>layout, k), 4), sizes[k])
                    raise
        for j in range(n):
            data = <object>PyTuple_GET_ITEM(<tuple>PyTuple_GET_ITEM(<tuple>layout, j), 4)
            if acquired[j]:
                if views[j].len:
                    memcpy(PyByteArray_AS_STRING(data) + sizes[j], views[j].buf, views[j].len)
                    held += views[j].len
            else:
                a = <object>values[j]
                (<list>data).append(a)
                held += a.nbytes if a.dtype.kind != "O" else a.size * 64
        return held
    finally:
        for j in range(n):
            if acquired[j]:
                PyBuffer_Release(&views[j])


def copy_record(object layout, object inputs, object outputs, Py_ssize_t rows):
    """Append a record's arrays (inputs unless None, then outputs) to a block's columns: the
    bytes it holds, or -1 (nothing appended) when they are not the columns'."""
    if (type(layout) is not tuple or type(outputs) is not dict
            or (inputs is not None and type(inputs) is not dict)):
        return _payload_reference.copy_record(layout, inputs, outputs, rows)
    return _copy_record(<tuple>layout, inputs, <dict>outputs, rows)


cdef inline Py_ssize_t _clamp(Py_ssize_t i, Py_ssize_t n):
    return 0 if i < 0 else (n if i > n else i)


cdef class Records:
    """A block's records as the request path appends them: the ids, and in C arrays each
    record's time, latency, rows up to its end and bytes held (no float object kept per
    record); the columns' layout that copy_record fills. The spec is
    serving.payload._reference.Records."""

    cdef readonly list ids
    cdef tuple _layout
    cdef bint _inputs
    cdef Py_ssize_t _n, _rows, _capacity, _max_bytes, _nbytes
    cdef double* _times
    cdef double* _latencies
    cdef Py_ssize_t* _ends
    cdef Py_ssize_t* _sizes

    def __cinit__(self, tuple layout, bint inputs, Py_ssize_t capacity, Py_ssize_t max_bytes):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._times = <double*>PyMem_Malloc(capacity * sizeof(double))
        self._latencies = <double*>PyMem_Malloc(capacity * sizeof(double))
        self._ends = <Py_ssize_t*>PyMem_Malloc(capacity * sizeof(Py_ssize_t))
        self._sizes = <Py_ssize_t*>PyMem_Malloc(capacity * sizeof(Py_ssize_t))
        if (self._times == NULL or self._latencies == NULL or self._ends == NULL
                or self._sizes == NULL):
            raise MemoryError()
        self.ids = []
        self._layout, self._inputs = layout, inputs
        self._capacity, self._max_bytes = capacity, max_bytes

    def __dealloc__(self):
        PyMem_Free(self._times)
        PyMem_Free(self._latencies)
        PyMem_Free(self._ends)
        PyMem_Free(self._sizes)

    def __len__(self):
        return self._n

    @property
    def nbytes(self):
        return self._nbytes

    def add(self, object rid, double t, double latency_s, object inputs, object outputs,
            Py_ssize_t rows):
        """Append a record: the bytes it holds, or -1 (nothing appended) when the block is
        full or its arrays are not the columns'."""
        cdef Py_ssize_t held, i = self._n
        if i >= self._capacity or self._nbytes >= self._max_bytes:
            return -1
        ins = inputs if self._inputs else None
        if type(outputs) is dict and (ins is None or type(ins) is dict):
            held = _copy_record(self._layout, ins, <dict>outputs, rows)
        else:
            held = _payload_reference.copy_record(self._layout, ins, outputs, rows)
        if held < 0:
            return -1
        self.ids.append(rid)
        self._times[i] = t
        self._latencies[i] = latency_s
        self._rows += rows
        self._ends[i] = self._rows
        self._sizes[i] = held
        self._n = i + 1
        self._nbytes += held
        return held

    def times(self, Py_ssize_t start, Py_ssize_t end):
        start, end = _clamp(start, self._n), _clamp(end, self._n)
        return [self._times[i] for i in range(start, end)]

    def latencies(self, Py_ssize_t start, Py_ssize_t end):
        start, end = _clamp(start, self._n), _clamp(end, self._n)
        return [self._latencies[i] for i in range(start, end)]

    def ends(self, Py_ssize_t start, Py_ssize_t end):
        start, end = _clamp(start, self._n), _clamp(end, self._n)
        return [self._ends[i] for i in range(start, end)]

    cdef Py_ssize_t _index(self, Py_ssize_t i) except -1:
        if i < 0 or i >= self._n:
            raise IndexError("record index out of range")
        return i

    def time(self, Py_ssize_t i):
        return self._times[self._index(i)]

    def end(self, Py_ssize_t i):
        return self._ends[self._index(i)]

    def size(self, Py_ssize_t i):
        return self._sizes[self._index(i)]
