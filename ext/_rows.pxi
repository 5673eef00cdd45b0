# Row kernels for serving.batching; the spec is serving/batching/_reference.py.

# Below this many bytes a copy is cheaper than releasing and retaking the GIL.
cdef enum:
    _NOGIL_BYTES = 1 << 16


cdef bint _get_rows(object obj, Py_buffer* view, int flags):
    """Acquire obj's buffer if it is a 2-D C-contiguous uint8 ndarray; if not, False (none held)."""
    if not isinstance(obj, ndarray):
        return False
    try:
        PyObject_GetBuffer(obj, view, flags)  # fails on a read-only array when flags ask to write
    except (BufferError, ValueError, TypeError):
        return False
    if (
        view.ndim == 2
        and view.itemsize == 1
        and view.format != NULL
        and view.format[0] == b"B"  # numpy's uint8, and only uint8, exports "B"
        and view.format[1] == 0
        and PyBuffer_IsContiguous(view, b"C")  # same rule as numpy's flags.c_contiguous
    ):
        return True
    PyBuffer_Release(view)
    return False


def gather_rows(object parts, object out):
    """Copy each part's rows into `out` back to back; return the rows written."""
    if type(parts) is not list:
        return _rows_reference.gather_rows(parts, out)
    cdef Py_buffer dst, src
    cdef Py_ssize_t row = 0, index = 0, n, width, nbytes
    cdef char* base
    if not _get_rows(out, &dst, PyBUF_RECORDS):
        raise ValueError("out is not a writable 2-D C-contiguous uint8 array")
    try:
        width = dst.shape[1]
        base = <char*>dst.buf
        for part in <list>parts:
            # A raw Py_buffer, not a typed memoryview: building a memoryview object per part
            # would cost more than copying a one-row part.
            if not _get_rows(part, &src, PyBUF_RECORDS_RO):
                raise ValueError(f"part {index} is not a 2-D C-contiguous uint8 array")
            n = src.shape[0]
            if src.shape[1] != width or n > dst.shape[0] - row:
                message = f"part {n}x{src.shape[1]} does not fit at row {row}"
                PyBuffer_Release(&src)
                raise ValueError(message)
            nbytes = n * width
            # memmove, not memcpy: a part may be a view of `out` itself.
            if nbytes >= _NOGIL_BYTES:
                with nogil:
                    memmove(base + row * width, src.buf, nbytes)
            elif nbytes:
                memmove(base + row * width, src.buf, nbytes)
            PyBuffer_Release(&src)
            row += n
            index += 1
    finally:
        PyBuffer_Release(&dst)
    return row


cdef inline bint _count_at(list counts, Py_ssize_t i, Py_ssize_t* count):
    """counts[i] as a C integer, or False if it is not a plain non-negative int that fits."""
    cdef object item = <object>PyList_GET_ITEM(counts, i)
    cdef int overflow = 0
    cdef long long value
    if type(item) is not int:
        return False
    value = PyLong_AsLongLongAndOverflow(item, &overflow)
    if overflow or value < 0 or value > <long long>PY_SSIZE_T_MAX:
        return False
    count[0] = <Py_ssize_t>value
    return True


cdef enum:
    _STACK_COUNTS = 128  # counts up to a big batch live on the stack


def scatter_rows(object src, object counts):
    """Split `src` along axis 0 into consecutive views of counts[i] rows each."""
    if type(src) is not ndarray or type(counts) is not list or (<object>src).ndim == 0:
        return _rows_reference.scatter_rows(src, counts)
    cdef Py_ssize_t m = PyList_GET_SIZE(<list>counts), rows = len(src), total = 0, i, j, c, row
    cdef Py_ssize_t on_stack[_STACK_COUNTS]
    cdef Py_ssize_t* ns = on_stack
    if m > _STACK_COUNTS:
        ns = <Py_ssize_t*>PyMem_Malloc(m * sizeof(Py_ssize_t))
        if ns == NULL:
            raise MemoryError()
    try:
        for i in range(m):
            # Anything odd (a float, a negative or too large count) is the twin's to report.
            if not _count_at(<list>counts, i, &ns[i]) or ns[i] > rows - total:
                return _rows_reference.scatter_rows(src, counts)
            total += ns[i]
        return _cut_runs(src, ns, m)
    finally:
        if ns != on_stack:
            PyMem_Free(ns)


cdef list _cut_runs(object src, const Py_ssize_t* ns, Py_ssize_t m):
    """The pieces of `src` for the checked counts ns[:m]."""
    # numpy's view creation is the whole cost, so runs of equal counts are cut in one go:
    # src[a:b] seen as (run, c, ...) splits only axis 0, which is always a view, and iterating
    # it yields the pieces through numpy's fastest view path (no index parsing per piece).
    cdef list pieces = []
    cdef Py_ssize_t i = 0, j, c, run, row = 0
    rest = None
    while i < m:
        c = ns[i]
        j = i + 1
        while j < m and ns[j] == c:
            j += 1
        run = j - i
        if run == 1:
            pieces.append(src[row : row + c])
        else:
            if c == 1:
                block = src[row : row + run, None]  # cheaper than reshape for one-row pieces
            else:
                if rest is None:
                    rest = src.shape[1:]
                block = src[row : row + run * c].reshape((run, c) + rest)
            if run == m:
                return list(block)
            pieces.extend(block)
        row += run * c
        i = j
    return pieces
