"""One batch: gather the requests' rows, run the session, split the outputs per request.

Runs on a worker thread (or on the loop for batches measured cheaper than a thread hand-off).
Numeric tensors are copied by the row kernel into a reusable buffer per (input, shape); object
tensors (BYTES) hold Python references, which only numpy may copy.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from time import thread_time
from typing import Protocol

import numpy as np

from serving.batching.kernels import gather_rows, scatter_rows
from serving.errors import ModelError
from serving.signature import Signature

log = logging.getLogger("serving.batching")

Outputs = dict[str, np.ndarray]
Observer = Callable[[dict[str, np.ndarray], Outputs], None]

# Buffers kept per thread: a model with variable non-batch dimensions makes one per shape it
# sees, so only the most recently used few are kept.
BUFFERS_PER_THREAD = 8
# Batches of an input smaller than this are gathered by numpy; bigger ones by the row kernel,
# which releases the GIL for copies this big (ext/_rows.pxi, _NOGIL_BYTES).
KERNEL_GATHER_BYTES = 1 << 16


class SessionLike(Protocol):
    """What the batcher needs of a `runtime.Session` (unit tests pass a fake)."""

    signature: Signature
    single_threaded: bool

    def run(
        self, feeds: dict[str, np.ndarray], output_names: list[str] | None
    ) -> list[np.ndarray]: ...


class BufferCache:
    """Reusable gather buffers keyed by (input name, shape key), least recently used dropped."""

    def __init__(self, limit: int = BUFFERS_PER_THREAD) -> None:
        self.limit = limit
        self._buffers: OrderedDict[tuple[str, Hashable], np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buffers)

    def get(self, name: str, key: Hashable, like: np.ndarray, rows: int) -> np.ndarray:
        """A buffer of at least `rows` rows shaped and typed like `like`'s rows."""
        slot = (name, key)
        buf = self._buffers.get(slot)
        if buf is None or len(buf) < rows or buf.dtype != like.dtype:
            buf = np.empty((rows, *like.shape[1:]), like.dtype)
            self._buffers[slot] = buf
            if len(self._buffers) > self.limit:
                self._buffers.popitem(last=False)
        else:
            self._buffers.move_to_end(slot)
        return buf


def _rows_u8(arr: np.ndarray) -> np.ndarray:
    """The array as raw rows of bytes, the layout the gather kernel copies."""
    return np.ascontiguousarray(arr).reshape(len(arr), -1).view(np.uint8)


def gather(
    parts: Sequence[dict[str, np.ndarray]], names: Sequence[str], key: Hashable, rows: int,
    capacity: int, buffers: BufferCache,
) -> dict[str, np.ndarray]:
    """The batch's feeds: each input's rows from every request, back to back."""
    if len(parts) == 1:
        return parts[0]
    feeds: dict[str, np.ndarray] = {}
    for name in names:
        first = parts[0][name]
        if first.dtype.hasobject:  # BYTES: references, copied (and counted) by numpy
            feeds[name] = np.concatenate([p[name] for p in parts])
            continue
        out = buffers.get(name, key, first, max(rows, capacity))[:rows]
        if out.nbytes < KERNEL_GATHER_BYTES:
            # one numpy call: viewing each part as rows of bytes for the kernel cost about a
            # microsecond per part, several times the copy (a tabular model has a part per
            # column and request)
            np.concatenate([p[name] for p in parts], out=out)
        else:  # the kernel copies big batches without holding the GIL
            gather_rows([_rows_u8(p[name]) for p in parts], _rows_u8(out))
        feeds[name] = out
    return feeds


def split(results: dict[str, np.ndarray], counts: list[int]) -> list[Outputs]:
    """Per-request views of the batch's outputs (`counts` rows each, in order)."""
    if len(counts) == 1:
        return [results]
    names = list(results)
    pieces = [scatter_rows(results[n], counts) for n in names]
    return [{n: p[i] for n, p in zip(names, pieces, strict=True)} for i in range(len(counts))]


def observe(observer: Observer, label: str, feeds: dict[str, np.ndarray],
            outputs: Outputs) -> None:
    """Hand a batch to monitoring, whose failure never fails inference."""
    try:
        observer(feeds, outputs)
    except Exception:
        log.exception("monitoring failed for model %s (inference unaffected)", label)


# What running a batch gave: per-request outputs or the error, and ORT's wall and CPU seconds
# (a plain tuple: this is built once per batch, on the loop for inline runs).
RunResult = tuple[list[Outputs] | None, Exception | None, float, float]


def _timed_run(
    session: SessionLike, feeds: dict[str, np.ndarray], on_loop: bool
) -> tuple[list[np.ndarray], float, float]:
    if on_loop or not session.single_threaded:
        # On the loop nothing waits for the GIL, so wall time is the CPU time (and
        # thread_time() is a syscall on some VMs); with ORT's own threads only wall time tells.
        t0 = time.perf_counter()
        results = session.run(feeds, None)
        run_s = time.perf_counter() - t0
        return results, run_s, run_s
    t0, c0 = time.perf_counter(), thread_time()
    results = session.run(feeds, None)
    return results, time.perf_counter() - t0, thread_time() - c0


def run_batch(
    session: SessionLike, label: str, parts: Sequence[dict[str, np.ndarray]], counts: list[int],
    key: Hashable, capacity: int, buffers: BufferCache, observer: Observer | None,
    on_loop: bool = False,
) -> RunResult:
    """Gather, run, scatter; a failure becomes a ModelError for every request of the batch."""
    sig = session.signature
    run_s = cpu_s = 0.0
    try:
        feeds = gather(parts, sig.input_names, key, sum(counts), capacity, buffers)
        results, run_s, cpu_s = _timed_run(session, feeds, on_loop)
        by_name = dict(zip(sig.output_names, results, strict=True))
        if observer is not None:
            observe(observer, label, feeds, by_name)
        return split(by_name, counts), None, run_s, cpu_s
    except Exception as exc:
        log.exception("inference failed for model %s", label)
        return None, ModelError(f"model {label} failed to run: {exc}"), run_s, cpu_s
