# The payload log's capture kernel; the spec is serving/payload/_reference.py.

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.dict cimport PyDict_Next
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_Compare
from libc.string cimport strcmp
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

cdef enum:
    _STACK_COLUMNS = 32  # a record of more columns goes to the spec
    _C_CONTIGUOUS = 0x0001  # NPY_ARRAY_C_CONTIGUOUS

# captures a Tap queues at most before taking them itself: the twin's bound
cdef Py_ssize_t _MAX_QUEUED = _payload_reference.MAX_QUEUED

cdef extern from *:
    """
    /* The leading fields of numpy's ndarray (PyArrayObject_fields in numpy/ndarraytypes.h),
       a layout numpy keeps for binary compatibility in 1.x and 2.x alike: read only for an
       object whose type is exactly numpy.ndarray. */
    typedef struct {
        PyObject_HEAD
        char *data;
        int nd;
        Py_ssize_t *dimensions;
        Py_ssize_t *strides;
        PyObject *base;
        PyObject *descr;
        int flags;
    } serving_ndarray;

    /* A view of an array's bytes that holds no object: PyBuffer_Release does nothing. */
    static void _borrow(Py_buffer *view, char *buf, Py_ssize_t len) {
        view->buf = buf;
        view->len = len;
        view->obj = NULL;
    }
    """
    ctypedef struct serving_ndarray:
        char* data
        int nd
        Py_ssize_t* dimensions
        PyObject* descr
        int flags
    void _borrow(Py_buffer* view, char* buf, Py_ssize_t len)


cdef bint _raw_fits(object value, tuple col, Py_ssize_t rows, Py_buffer* view):
    """Acquire value's buffer (an ndarray's) if it is the raw column's: its format and item
    size, `rows` rows of the column's row shape, C-contiguous. If not, False (none held).
    An array of the column's own dtype object (numpy's builtin dtypes are singletons: nearly
    always) is read from its fields, without the buffer protocol, whose export builds a format
    string and an info struct for every new array: `view` then holds no object."""
    cdef tuple shape = <tuple>PyTuple_GET_ITEM(col, 3)
    cdef Py_ssize_t k, n, rank = PyTuple_GET_SIZE(shape)
    cdef serving_ndarray* a = <serving_ndarray*><PyObject*>value
    if a.descr == PyTuple_GET_ITEM(col, 5) and a.flags & _C_CONTIGUOUS:
        if a.nd != rank + 1 or a.dimensions[0] != rows:
            return False
        n = rows * <Py_ssize_t><object>PyTuple_GET_ITEM(col, 2)
        for k in range(rank):
            if a.dimensions[k + 1] != <Py_ssize_t><object>PyTuple_GET_ITEM(shape, k):
                return False
            n *= a.dimensions[k + 1]
        _borrow(view, a.data, n)
        return True
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


cdef Py_ssize_t _copy_any(object layout, object inputs, object outputs,
                          Py_ssize_t rows) except -2:
    """copy_record: the compiled copy for a tuple layout and dicts, else the spec's."""
    if (type(layout) is not tuple or type(outputs) is not dict
            or (inputs is not None and type(inputs) is not dict)):
        return _payload_reference.copy_record(layout, inputs, outputs, rows)
    return _copy_record(<tuple>layout, inputs, <dict>outputs, rows)


def copy_record(object layout, object inputs, object outputs, Py_ssize_t rows):
    """Append a record's arrays (inputs unless None, then outputs) to a block's columns: the
    bytes it holds, or -1 (nothing appended) when they are not the columns'."""
    return _copy_any(layout, inputs, outputs, rows)


cdef inline Py_ssize_t _clamp(Py_ssize_t i, Py_ssize_t n):
    return 0 if i < 0 else (n if i > n else i)


cdef class Records:
    """A block's records as the request path appends them: the ids, and in C arrays each
    record's time, latency, rows up to its end and bytes held (no float object kept per
    record); the columns' layout that copy_record fills. The spec is
    serving.payload._reference.Records."""

    cdef readonly list ids
    cdef public object policy  # the block's (Block sets it): Tap checks it is the model's
    cdef public bint sink  # the policy has a sink: its records count in the writer's bounds
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
        return self._add(rid, t, latency_s, inputs, outputs, rows)

    cdef Py_ssize_t _add(self, object rid, double t, double latency_s, object inputs,
                         object outputs, Py_ssize_t rows) except -2:
        cdef Py_ssize_t held, i = self._n
        if i >= self._capacity or self._nbytes >= self._max_bytes:
            return -1
        held = _copy_any(self._layout, inputs if self._inputs else None, outputs, rows)
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


cdef inline double _now():
    """time.time(): the same clock, without a float object."""
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef class Tap:
    """The payload log's request path (serving/payload/log.py): `decide`, `capture`, which
    queues the record, and `flush`, which the loop's next pass runs, when the model's policy
    is built and its open block takes the record, which is nearly every logged request.
    Anything else (a policy to build, a block to open or seal, a record of other arrays, an
    error) goes to the log's own `_decide` and `_capture`, which are the spec:
    serving.payload._reference.Tap sends everything there. Compiled calls instead of Python
    frames, a dozen attribute lookups and a float: the loop's side of logging. A pass's
    records are taken together, after its responses are written, with one hold of the lock:
    taken one at a time, between a response's encoding and its write, each capture found the
    lines it touches (the Tap, the policies, the lock, the block's layout and columns) evicted
    by the kernel's work since the last, and cost several times what it costs in a loop."""

    cdef object _log, _off, _acquire, _release, _random
    cdef str _prefix
    cdef dict _policies
    cdef readonly dict cores  # (model, version, route): the Records of its open block
    cdef public Py_ssize_t pending, held  # records waiting for the writer, and their bytes
    cdef Py_ssize_t _max_records, _max_bytes
    cdef long long _ids
    cdef list _queue  # (capture's arguments) for flush

    def __cinit__(self, log, dict policies, off, lock, str prefix, Py_ssize_t max_records,
                  Py_ssize_t max_bytes, random):
        self._log, self._policies, self._off, self._prefix = log, policies, off, prefix
        self._acquire, self._release = lock.acquire, lock.release
        self._max_records, self._max_bytes = max_records, max_bytes
        self._random = random
        self.cores = {}
        self._queue = []

    def new_id(self):
        """An id for a request that came without one: unique in this process."""
        self._ids += 1
        return f"{self._prefix}-{self._ids}"

    cdef object _policy(self, object cfg):
        """The policy built for this config object, or None."""
        hit = self._policies.get(id(cfg))
        if hit is None or (<tuple>hit)[0] is not cfg:
            return None
        return (<tuple>hit)[1]

    def decide(self, cfg, request_id, key):
        """PayloadLog._decide for a policy already built."""
        policy = self._policy(cfg)
        if policy is None:
            return self._log._decide(cfg, request_id, key)
        if policy is self._off:
            return None
        cdef double sample = <double>(<tuple>policy)[0]
        if not (sample >= 1.0 or (key or request_id) in (<tuple>policy)[1]
                or self._random() < sample):
            return None
        return request_id or self.new_id()

    def capture(self, request_id, model, version, route, inputs, outputs, latency_s, cfg,
                rows=-1):
        """PayloadLog._capture, a little later: the record is queued, and the event loop's next
        pass takes every record queued in this one at once (`flush`, which the log's `_later`
        schedules), after this pass's responses are written. Without a running loop (another
        thread, a test) it is taken at once. Never raises."""
        cdef list queue = self._queue
        try:
            queue.append((request_id, model, version, route, inputs, outputs, latency_s, cfg,
                          rows))
            if PyList_GET_SIZE(queue) == 1:
                try:
                    self._log._later(self.flush)
                except Exception:  # no running loop
                    self.flush()
            elif PyList_GET_SIZE(queue) >= _MAX_QUEUED:  # a pass that never came
                self.flush()
        except Exception:
            self._log._capture_failed()

    def flush(self):
        """Take the queued records, in order: into the open block of their model, version and
        route when it takes them (one hold of the lock for all of those), else through the
        log's _capture, one by one. Never raises."""
        cdef list queue = self._queue
        cdef Py_ssize_t i, n = PyList_GET_SIZE(queue), size
        cdef bint locked = False
        cdef double now
        cdef Records core
        cdef object seen_model = None, seen_version = None, seen_route = None
        if n == 0:
            return
        self._queue = []
        now = _now()
        core = None
        try:
            for i in range(n):
                item = <object>PyList_GET_ITEM(queue, i)
                (request_id, model, version, route, inputs, outputs, latency_s, cfg,
                 rows) = <tuple>item
                try:
                    policy = self._policy(cfg)
                    if (policy is not None and type(inputs) is dict and type(rows) is int
                            and rows >= 0):
                        if not locked:  # else the writer holds it for a moment
                            self._acquire()
                            locked = True
                        if (model is not seen_model or version is not seen_version
                                or route is not seen_route):
                            core = self.cores.get((model, version, route))
                            seen_model, seen_version, seen_route = model, version, route
                        if core is not None and core.policy is policy:
                            size = core._add(request_id, now, latency_s, inputs, outputs, rows)
                            if size >= 0:
                                if core.sink:
                                    self.pending += 1
                                    self.held += size
                                    if (self.pending > self._max_records
                                            or self.held > self._max_bytes):
                                        self._log._shed()
                                continue
                    if locked:
                        self._release()
                        locked = False
                    seen_model = core = None  # _capture opens and seals blocks
                    self._log._capture(request_id, model, version, route, inputs, outputs,
                                       latency_s, cfg, rows)
                except Exception:
                    self._log._capture_failed()
        finally:
            if locked:
                self._release()


cdef extern from "string.h":
    void* memmem(const void* haystack, size_t haystacklen, const void* needle,
                 size_t needlelen) nogil


cdef enum:
    _CONSTANT = 0
    _EACH = 1
    _SPLIT = 2


def interleave(list pieces, Py_ssize_t n):
    """A block's `n` lines (serving/payload/lines.py): for each record, every piece in order.
    A piece is bytes (the same in every record), a list of n bytes (each record's own), or
    (text, sep): the records' own in one text, separated by sep. Each record's bytes are
    copied once into the result, where splitting each text into n bytes objects and joining
    them made and freed several objects a record. The spec is
    serving.payload._reference.interleave (ValueError for pieces that are not n)."""
    cdef Py_ssize_t k = len(pieces), total = 0, i, j, pos, end, splits = 0, m, length, slen
    cdef char* text
    cdef char* sep
    cdef char* w
    cdef void* hit
    if n <= 0:
        return b""
    # per piece: its kind, and its bytes and length (a split piece: its text, and its index
    # among the split pieces in `lens`); + 1: no pieces is not a failed allocation
    cdef int* kinds = <int*>PyMem_Malloc(k * sizeof(int) + 1)
    cdef char** bufs = <char**>PyMem_Malloc(k * sizeof(char*) + 1)
    cdef Py_ssize_t* lens = <Py_ssize_t*>PyMem_Malloc(k * sizeof(Py_ssize_t) + 1)
    cdef Py_ssize_t* cuts = NULL  # for each split piece, each record's start and end
    cdef Py_ssize_t* c
    try:
        if kinds == NULL or bufs == NULL or lens == NULL:
            raise MemoryError()
        for j in range(k):
            p = pieces[j]
            if type(p) is bytes:
                kinds[j], bufs[j], lens[j] = _CONSTANT, PyBytes_AS_STRING(p), len(<bytes>p)
                total += lens[j] * n
            elif type(p) is list:
                if PyList_GET_SIZE(p) != n:
                    raise ValueError("a list piece does not hold one bytes a record")
                for i in range(n):
                    item = <object>PyList_GET_ITEM(p, i)
                    if type(item) is not bytes:
                        raise TypeError("a record's piece is not bytes")
                    total += len(<bytes>item)
                kinds[j] = _EACH
            elif (type(p) is tuple and len(<tuple>p) == 2 and type((<tuple>p)[0]) is bytes
                  and type((<tuple>p)[1]) is bytes and len((<tuple>p)[1])):
                kinds[j] = _SPLIT
                lens[j] = splits
                splits += 1
            else:
                raise TypeError("a piece is bytes, a list of bytes or (text, separator)")
        if splits:
            cuts = <Py_ssize_t*>PyMem_Malloc(splits * 2 * n * sizeof(Py_ssize_t))
            if cuts == NULL:
                raise MemoryError()
        for j in range(k):
            if kinds[j] != _SPLIT:
                continue
            p = pieces[j]
            text, length = PyBytes_AS_STRING((<tuple>p)[0]), len(<bytes>(<tuple>p)[0])
            sep, slen = PyBytes_AS_STRING((<tuple>p)[1]), len(<bytes>(<tuple>p)[1])
            bufs[j] = text
            c = cuts + lens[j] * 2 * n
            pos = 0
            for i in range(n):
                hit = memmem(text + pos, length - pos, sep, slen)
                if (hit == NULL) != (i == n - 1):
                    raise ValueError("a split piece does not hold one text a record")
                end = <char*>hit - text if hit != NULL else length
                c[2 * i], c[2 * i + 1] = pos, end
                total += end - pos
                pos = end + slen
        out = PyBytes_FromStringAndSize(NULL, total)
        w = PyBytes_AS_STRING(out)
        for i in range(n):
            for j in range(k):
                if kinds[j] == _CONSTANT:
                    memcpy(w, bufs[j], lens[j])
                    w += lens[j]
                elif kinds[j] == _EACH:
                    item = <object>PyList_GET_ITEM(<list>pieces[j], i)
                    m = len(<bytes>item)
                    memcpy(w, PyBytes_AS_STRING(item), m)
                    w += m
                else:
                    c = cuts + lens[j] * 2 * n + 2 * i
                    memcpy(w, bufs[j] + c[0], c[1] - c[0])
                    w += c[1] - c[0]
        return out
    finally:
        PyMem_Free(kinds)
        PyMem_Free(bufs)
        PyMem_Free(lens)
        PyMem_Free(cuts)


cdef extern from "math.h":
    bint signbit(double x) nogil


cdef const char* _PAIRS = (b"00010203040506070809101112131415161718192021222324252627282930313233"
                          b"34353637383940414243444546474849505152535455565758596061626364656667"
                          b"6869707172737475767778798081828384858687888990919293949596979899")


cdef inline char* _whole(char* w, uint64_t u) noexcept nogil:
    """Write u's decimal digits at w; past them. Under 100 (most whole-number features) with
    no branch on the width: the pair's second digit alone, or both (two bytes are written
    either way: the caller's buffer has room, and the next write covers the second)."""
    cdef const char* pair
    cdef int two, n
    cdef uint64_t t
    if u < 100:
        pair = _PAIRS + 2 * u
        two = u >= 10
        w[0] = pair[1 - two]
        w[1] = pair[1]
        return w + 1 + two
    n = 2
    t = u // 100
    while t:
        n += 1
        t //= 10
    w += n
    while u >= 10:
        t = u // 10
        w -= 1
        w[0] = <char>(48 + u - t * 10)
        u = t
    w -= 1
    w[0] = <char>(48 + u)
    return w + n


def whole_numbers_json(object a):
    """orjson.dumps(a, option=OPT_SERIALIZE_NUMPY) when `a` is a non-empty C-contiguous
    float32 or float64 ndarray of whole numbers under 2**24 (float32) or 10**15 (float64) in
    magnitude, else None (the twin in serving.payload._reference says the same). orjson writes
    each of these as its integer and ".0" (every whole number in the range is exact, and no
    shorter form reads back as it); writing them so here costs a fraction of its shortest-form
    search, and inputs of counts, codes, pixels and one-hot columns are like this."""
    if type(a) is not ndarray:
        return None
    cdef serving_ndarray* arr = <serving_ndarray*><PyObject*>a
    cdef bint f32
    if arr.descr == <PyObject*>_F32:
        f32 = True
    elif arr.descr == <PyObject*>_F64:
        f32 = False
    else:
        return None
    if not (arr.flags & _C_CONTIGUOUS) or arr.nd < 1 or arr.nd > _MAX_DIMS:
        return None
    cdef Py_ssize_t blocks[_MAX_DIMS]  # values in a run of each dimension
    cdef Py_ssize_t at[_MAX_DIMS]  # values written in the current run of each dimension
    cdef Py_ssize_t size = 1, most, i, k, nd = arr.nd
    for k in range(nd - 1, -1, -1):
        size *= arr.dimensions[k]
        blocks[k] = size
        at[k] = 0
    if size == 0:
        return None
    most = size * 20  # a sign, 15 digits, ".0" and a comma each
    for k in range(nd):
        most += 2 * (size // blocks[k])  # the brackets
    cdef float* p32 = <float*>arr.data
    cdef double* p64 = <double*>arr.data
    cdef double v, limit = 16777216.0 if f32 else 1e15
    v = p32[0] if f32 else p64[0]
    if not (-limit < v < limit) or v != <double><int64_t>v:  # the usual answer for other data
        return None
    cdef char* buf = <char*>PyMem_Malloc(most)
    cdef char* w = buf
    if buf == NULL:
        raise MemoryError()
    try:
        for i in range(size):
            v = p32[i] if f32 else p64[i]
            if not (-limit < v < limit) or v != <double><int64_t>v:  # NaN fails the first
                return None
            for k in range(nd):
                if at[k] == 0:  # a run of dimension k starts
                    w[0] = c"["
                    w += 1
            if signbit(v):
                w[0] = c"-"
                w += 1
            w = _whole(w, <uint64_t>(v if v >= 0 else -v))
            w[0], w[1] = c".", c"0"
            w += 2
            for k in range(nd):
                at[k] += 1
                if at[k] == blocks[k]:  # a run of dimension k ends
                    w[0] = c"]"
                    w += 1
                    at[k] = 0
            w[0] = c","
            w += 1
        return PyBytes_FromStringAndSize(buf, w - buf - 1)  # no comma after the last
    finally:
        PyMem_Free(buf)
