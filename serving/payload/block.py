"""Logged records as the request path keeps them: blocks of records of one model, version and
route, their numeric tensors copied into one growing byte array per input and output.

A block holds each column's rows back to back (the compiled `copy_record`, ext/_payload.pxi: a
buffer check and a memcpy per tensor), and in a compiled `Records` each record's id, time,
latency, row end and size. The request's own arrays and dicts are freed once the loop's next
pass has copied them (PayloadLog.flush), instead of being held until the writer reaches
them; the writer renders a block's column with one orjson call on a view of its bytes
(`lines.block_lines`), and the store of recent predictions (`store.py`) is the blocks
themselves. Holding every logged request's objects for the writer's tick, and filing a copy
of its prediction, cost the event loop 3-4 us a request (benchmarks/bench_payload_inproc.py).

A column is raw when its arrays are numeric, C-contiguous, with a row shape free of empty
dimensions and as many rows as the record; any other array (text, no batch dimension, rows of
their own) is kept by reference in a list. A record whose arrays do not fit the block's
columns (other names, dtypes or row shapes) starts a new block: `add` says so before copying
anything.
"""

from __future__ import annotations

import os
import time

import numpy as np

from serving.payload._reference import Spec, buffer_format
from serving.payload.record import Answer, Logged, Policy, prediction

if os.environ.get("SERVING_PUREPYTHON"):  # msgpack's switch, as serving/batching/kernels.py
    from serving.payload._reference import Records
else:  # a broken build fails loudly
    from serving._kernels import Records  # type: ignore[assignment]

CAPACITY = 1024  # records a block holds at most; a record's ref is number * CAPACITY + index
BLOCK_BYTES = 1 << 20  # a block is sealed once its columns hold this many bytes
_RAW_KINDS = "biuf"  # what orjson writes straight from an array's bytes (record.plain)


class Column:
    """One input or output of a block's records."""

    __slots__ = ("arrays", "data", "dtype", "name", "raw", "row_bytes", "shape", "spec")

    def __init__(self, name: str, a: np.ndarray, rows: int) -> None:
        self.name = name
        self.dtype = a.dtype
        self.shape: tuple[int, ...] = a.shape[1:]
        self.raw = bool(a.ndim >= 1 and a.dtype.kind in _RAW_KINDS and all(self.shape)
                        and len(a) == rows and a.flags.c_contiguous)
        self.row_bytes = a.dtype.itemsize * int(np.prod(self.shape)) if self.raw else 0
        self.data = bytearray()  # raw: the rows, back to back
        self.arrays: list[np.ndarray] = []  # not raw: each record's array
        self.spec: Spec = ((name, buffer_format(a), a.itemsize, self.shape, self.data, a.dtype)
                           if self.raw else (name, None, 0, None, self.arrays, None))

    def rows(self, start: int, end: int) -> np.ndarray:
        """A raw column's rows [start, end) as an array (a view of its bytes)."""
        b = self.row_bytes
        flat = np.frombuffer(self.data, self.dtype, (end - start) * b // self.dtype.itemsize,
                             start * b)
        return flat.reshape(end - start, *self.shape)


class Block:
    """Records of one model, version and route, and the policy they were logged under."""

    __slots__ = ("_predicted", "add", "core", "ids", "indexed", "inputs", "model", "number",
                 "opened", "outputs", "policy", "route", "sealed", "start", "version")

    def __init__(self, number: int, model: str, version: str, route: str, policy: Policy,
                 inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
                 rows: int) -> None:
        self.number = number
        self.opened = time.monotonic()
        self.model, self.version, self.route, self.policy = model, version, route, policy
        # inputs are kept only for a sink: the store of recent predictions needs the outputs
        self.inputs = [Column(k, a, rows) for k, a in inputs.items()] if policy.sink else []
        self.outputs = [Column(k, a, rows) for k, a in outputs.items()]
        self.core = Records(tuple(c.spec for c in (*self.inputs, *self.outputs)),
                            bool(self.inputs), CAPACITY, BLOCK_BYTES)
        self.core.policy, self.core.sink = policy, bool(policy.sink)
        self.ids: list[str] = self.core.ids
        # add(rid, t, latency_s, inputs, outputs, rows): append a record, copying its arrays
        # into the columns; the bytes it holds, or -1 (nothing appended) when the block is
        # full or the arrays are not its columns. PayloadLog._capture's; the request path's
        # common case is the compiled Tap, which appends through the Records directly.
        self.add = self.core.add
        self.start = 0  # records before this were dropped from the writer's buffer
        self.sealed = False  # no longer open: nothing more is appended
        self.indexed = 0  # records the store of recent predictions has indexed
        # a sealed block's prediction for every row, made when feedback first asks
        self._predicted: tuple[str, np.ndarray | None] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def release_inputs(self) -> None:
        """Free the inputs once the writer is done with them (the store keeps the outputs)."""
        for c in self.inputs:
            c.data.clear()
            c.arrays.clear()

    def arrays(self, cols: list[Column], i: int) -> dict[str, np.ndarray]:
        start, end = self.core.end(i - 1) if i else 0, self.core.end(i)
        return {c.name: c.rows(start, end) if c.raw else c.arrays[i] for c in cols}

    def answer(self, i: int, rid: str) -> Answer:
        """Record i as feedback joins it."""
        start, end = self.core.end(i - 1) if i else 0, self.core.end(i)
        if self.sealed and all(c.raw for c in self.outputs):
            if self._predicted is None:  # once per block: a flood of feedback asks often
                self._predicted = _copied(prediction({c.name: c.rows(0, self.core.end(
                    len(self) - 1)) for c in self.outputs}))
            kind, every = self._predicted
            values = every[start:end].copy() if every is not None else None
        else:
            # a copy: a view of a column's bytes would stop the block growing
            kind, values = _copied(prediction(self.arrays(self.outputs, i)))
        return Answer(rid, self.core.time(i), self.model, self.version, self.route, kind,
                      values)

    def records(self) -> list[Logged]:
        """The records from `start` as Logged tuples (for CloudEvents, and the spec)."""
        p = self.policy
        core = self.core
        return [(self.ids[i], core.time(i), self.model, self.version, self.route,
                 self.arrays(self.inputs, i), self.arrays(self.outputs, i),
                 core.latencies(i, i + 1)[0],
                 p.sink, p.segment_records, p.segment_s)
                for i in range(self.start, len(self.ids))]


def _copied(pred: tuple[str, np.ndarray] | None) -> tuple[str, np.ndarray | None]:
    return (pred[0], pred[1].copy()) if pred is not None else ("", None)
