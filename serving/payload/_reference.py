"""The pure-Python twin of the payload capture kernel in `ext/_payload.pxi`: slow, obvious,
and the spec."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

MAX_QUEUED = 4096  # captures a Tap queues at most before taking them itself (both Taps)

# A block's column as the kernel reads it: name, then for a raw column its buffer format, item
# size, row shape, the bytearray of its rows and its dtype (an array of this very dtype object
# the kernel reads without the buffer protocol); for any other column None, 0, None, the list
# of each record's array and None.
Spec = tuple[str, bytes | None, int, tuple[int, ...] | None, Any, Any]


def buffer_format(a: np.ndarray) -> bytes:
    """The struct format of an array's buffer (what the kernel compares)."""
    return memoryview(a).format.encode()  # type: ignore[arg-type]


def _fits(spec: Spec, name: object, a: object, rows: int) -> bool:
    cname, fmt, itemsize, shape, _data, _dtype = spec
    if type(name) is not str or name != cname or type(a) is not np.ndarray:
        return False
    return fmt is None or shape is None or (
        a.ndim == len(shape) + 1 and len(a) == rows and a.shape[1:] == shape
        and a.itemsize == itemsize and a.flags.c_contiguous and buffer_format(a) == fmt)


def copy_record(layout: tuple[Spec, ...], inputs: dict[str, np.ndarray] | None,
                outputs: dict[str, np.ndarray], rows: int) -> int:
    """Append a record's arrays (inputs unless None, then outputs: by name, in the columns'
    order) to a block's columns: the bytes it holds (strings count 64 an element), or -1
    (nothing appended) when they are not the columns' (names, and for a raw column: its
    format, item size and row shape, `rows` rows, C-contiguous)."""
    items = [*(inputs.items() if inputs is not None else ()), *outputs.items()]
    if len(items) != len(layout):
        return -1
    if not all(_fits(spec, name, a, rows) for (name, a), spec in zip(items, layout,
                                                                    strict=True)):
        return -1
    grown: list[tuple[bytearray, int]] = []
    try:  # every raw column first, so a failure leaves the block as it was
        for (_name, a), (_cname, fmt, *_, data, _dtype) in zip(items, layout, strict=True):
            if fmt is not None and a.nbytes:
                size = len(data)
                data.extend(a.tobytes())
                grown.append((data, size))
    except BaseException:
        for data, size in grown:
            del data[size:]
        raise
    held = 0
    for (_name, a), (_cname, fmt, *_, data, _dtype) in zip(items, layout, strict=True):
        if fmt is not None:
            held += a.nbytes
        else:
            data.append(a)
            held += a.nbytes if a.dtype.kind != "O" else a.size * 64
    return held


class Tap:
    """The request path's front of the payload log (serving/payload/log.py): `decide` is the
    log's own `_decide`, and `capture` queues the record for `flush`, which hands it to the
    log's own `_capture`: the spec the compiled twin's fast path keeps to. This one holds the
    state they share with it."""

    def __init__(self, log: Any, _policies: dict[int, Any], _off: Any, _lock: Any, prefix: str,
                 _max_records: int, _max_bytes: int, _random: Any) -> None:
        """The compiled twin's arguments; this one needs only the log and the prefix."""
        self._log, self._prefix = log, prefix
        self.cores: dict[tuple[str, str, str], Records] = {}
        self.pending = 0  # records waiting for the writer
        self.held = 0  # their bytes
        self._ids = 0
        self._queue: list[tuple[Any, ...]] = []  # capture's arguments, for flush

    def new_id(self) -> str:
        """An id for a request that came without one: unique in this process."""
        self._ids += 1
        return f"{self._prefix}-{self._ids}"

    def decide(self, cfg: Any, request_id: str | None, key: str | None) -> str | None:
        return self._log._decide(cfg, request_id, key)  # type: ignore[no-any-return]

    def capture(self, request_id: str, model: str, version: str, route: str, inputs: Any,
                outputs: Any, latency_s: float, cfg: Any, rows: int = -1) -> None:
        """Queue the record for `flush`, at the loop's next pass (`_later`), or at once."""
        self._queue.append((request_id, model, version, route, inputs, outputs, latency_s,
                            cfg, rows))
        if len(self._queue) == 1:
            try:
                self._log._later(self.flush)
            except Exception:  # no running loop
                self.flush()
        elif len(self._queue) >= MAX_QUEUED:
            self.flush()

    def flush(self) -> None:
        """The queued records through the log's _capture, in order."""
        queue, self._queue = self._queue, []
        for args in queue:
            self._log._capture(*args)


class Records:
    """A block's records as the request path appends them: the ids, each record's time,
    latency, rows up to its end and bytes held, and the columns' layout that copy_record
    fills (the compiled twin keeps the numbers in C arrays)."""

    def __init__(self, layout: tuple[Spec, ...], inputs: bool, capacity: int,
                 max_bytes: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.ids: list[Any] = []
        self.policy: Any = None  # the block's (Block sets it)
        self.sink = False  # the policy has a sink
        self._layout, self._inputs = layout, inputs
        self._capacity, self._max_bytes = capacity, max_bytes
        self._times: list[float] = []
        self._latencies: list[float] = []
        self._ends: list[int] = []
        self._sizes: list[int] = []
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, rid: Any, t: float, latency_s: float, inputs: dict[str, np.ndarray],
            outputs: dict[str, np.ndarray], rows: int) -> int:
        """Append a record: the bytes it holds, or -1 (nothing appended) when the block is
        full or its arrays are not the columns'."""
        if len(self.ids) >= self._capacity or self.nbytes >= self._max_bytes:
            return -1
        held = copy_record(self._layout, inputs if self._inputs else None, outputs, rows)
        if held < 0:
            return -1
        self.ids.append(rid)
        self._times.append(float(t))
        self._latencies.append(float(latency_s))
        self._ends.append((self._ends[-1] if self._ends else 0) + rows)
        self._sizes.append(held)
        self.nbytes += held
        return held

    def times(self, start: int, end: int) -> list[float]:
        return self._times[max(start, 0):max(end, 0)]

    def latencies(self, start: int, end: int) -> list[float]:
        return self._latencies[max(start, 0):max(end, 0)]

    def ends(self, start: int, end: int) -> list[int]:
        return self._ends[max(start, 0):max(end, 0)]

    def time(self, i: int) -> float:
        return self._times[self._index(i)]

    def end(self, i: int) -> int:
        return self._ends[self._index(i)]

    def size(self, i: int) -> int:
        return self._sizes[self._index(i)]

    def _index(self, i: int) -> int:
        if not 0 <= i < len(self.ids):
            raise IndexError("record index out of range")
        return i


def interleave(pieces: list[bytes | list[bytes] | tuple[bytes, bytes]], n: int) -> bytes:
    """A block's `n` lines: for each record, every piece in order. A piece is bytes (the same
    in every record), a list of n bytes (each record's own), or (text, sep): the records' own
    in one text, separated by sep."""
    if n <= 0:
        return b""
    columns: list[list[bytes]] = []
    for p in pieces:
        if type(p) is tuple:
            text, sep = p
            if type(text) is not bytes or type(sep) is not bytes or not sep:
                raise TypeError("a piece is bytes, a list of bytes or (text, separator)")
            parts = text.split(sep)
            if len(parts) != n:
                raise ValueError("a split piece does not hold one text a record")
            columns.append(parts)
        elif type(p) is list:
            if len(p) != n:
                raise ValueError("a list piece does not hold one bytes a record")
            if not all(type(b) is bytes for b in p):
                raise TypeError("a record's piece is not bytes")
            columns.append(p)
        elif type(p) is bytes:
            columns.append([p] * n)
        else:
            raise TypeError("a piece is bytes, a list of bytes or (text, separator)")
    return b"".join(b"".join(col[i] for col in columns) for i in range(n))


def whole_numbers_json(a: Any) -> bytes | None:
    """orjson.dumps(a, option=OPT_SERIALIZE_NUMPY) when `a` is a non-empty C-contiguous
    float32 or float64 ndarray of whole numbers under 2**24 (float32) or 10**15 (float64) in
    magnitude, else None: the compiled twin writes these itself."""
    if (type(a) is not np.ndarray or a.dtype not in (np.dtype(np.float32), np.dtype(np.float64))
            or not a.flags.c_contiguous or a.ndim < 1 or a.ndim > 32 or a.size == 0):
        return None
    limit = 2**24 if a.dtype == np.float32 else 10**15
    with np.errstate(invalid="ignore"):
        if not (np.all(np.abs(a) < limit) and np.all(np.trunc(a) == a)):
            return None
    return orjson.dumps(a, option=orjson.OPT_SERIALIZE_NUMPY)
