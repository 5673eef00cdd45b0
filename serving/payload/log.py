"""The payload log: which requests are logged, the bounded buffer the request path appends to,
and the writer thread that renders and ships the records.

On the request path (event loop thread) a logged request costs one `decide` call (a cached
policy lookup and, when sampled, an id) and one `capture` call, which queues it; the loop's
next pass takes the records its previous pass queued (`flush`, scheduled by `_later`) and
copies their tensors into the open block of their model, version and route
(serving/payload/block.py); that block is also in the model's store of recent predictions
(serving/payload/store.py), so nothing else is filed for feedback. All three are the compiled
Tap's (ext/_payload.pxi): C calls for the common case, the rest handed to `_decide` and
`_capture` here, the spec. Nothing is serialised or sent there. Taking a pass's records
together, after its responses are written, is cheaper than one at a time between them: over
sockets each capture ran between a response's encoding and its write, with the lines the
capture touches evicted by the kernel's work in between.

The writer thread wakes every `tick_s`, seals the open blocks that are big or old enough, takes
the sealed ones and hands them to the sinks; when a sink is slow the blocks wait, and a capture
past the bounds (records, and bytes of their tensors) drops the oldest records (counted under
`buffer_full`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from random import random
from typing import Any

import numpy as np

from serving.model_config import ModelConfig
from serving.payload.block import Block
from serving.payload.feedback import FeedbackBook
from serving.payload.record import OFF, Answer, Inputs, Outputs, Policy, input_arrays
from serving.payload.sinks import Sink, open_sink
from serving.payload.store import Store

if os.environ.get("SERVING_PUREPYTHON"):  # as serving/payload/block.py
    from serving.payload._reference import Tap
else:
    from serving._kernels import Tap  # type: ignore[assignment]

log = logging.getLogger("serving.payload")
SEAL_RECORDS = 64  # an open block this big is sealed and written at the writer's next pass



class PayloadLog:
    """The server's payload logging: per-model policies (model.toml's `[logging]`, with the
    server's overrides), the buffer, the writer thread, and the recent predictions by id."""

    # the request path: the compiled Tap's methods (ext/_payload.pxi), which take the common
    # case and send the rest to _decide and _capture
    decide: Callable[[ModelConfig, str | None, str | None], str | None]
    capture: Callable[..., None]
    flush: Callable[[], None]  # take the queued captures now (the loop thread's)

    def __init__(
        self, sink: str = "", sample: float = -1.0, buffer: int = 10_000, tick_s: float = 0.05,
        buffer_bytes: int = 256 << 20, seal_s: float = 1.0,
    ) -> None:
        self.sink_override = sink
        self.sample_override = sample
        self.tick_s = tick_s
        self.seal_s = seal_s  # a block under SEAL_RECORDS records is written this late
        # The records waiting for the writer, in the open blocks and the sealed ones, and the
        # bytes of their tensors: bounded in both, the oldest dropped first. The loop appends
        # and drops, the writer seals and takes: under the lock.
        self._open: dict[tuple[str, str, str], Block] = {}  # model, version, route: block
        self._ready: deque[Block] = deque()  # sealed blocks waiting for the writer
        self._numbers = itertools.count()
        self._sealed: dict[tuple[str, str, str], int] = {}  # records of blocks no longer open
        self._max_records, self._max_bytes = buffer, buffer_bytes
        self._lock = threading.Lock()
        self._policies: dict[int, tuple[ModelConfig, Policy]] = {}
        # ids unique across processes and restarts; the records waiting for the writer (from
        # each block's start) and their bytes are the Tap's pending and held
        self._tap = Tap(self, self._policies, OFF, self._lock, secrets.token_hex(6), buffer,
                        buffer_bytes, random)
        self.decide = self._tap.decide
        self.capture = self._tap.capture
        self.flush = self._tap.flush
        self._stores: dict[str, Store] = {}  # model: its recent predictions (loop thread)
        self.dropped: dict[str, int] = {"buffer_full": 0, "sink_error": 0, "encode_error": 0,
                                        "capture_error": 0}
        self.written = 0  # writer thread: records a sink accepted
        self._sinks: dict[str, Sink] = {}
        self.feedback = FeedbackBook()  # loop thread: joined feedback and live quality
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the request path (event loop thread) ----------------------------------------------

    def policy(self, cfg: ModelConfig) -> Policy:
        """The logging policy of a model.toml, built once per config object."""
        hit = self._policies.get(id(cfg))
        if hit is not None and hit[0] is cfg:
            return hit[1]
        c = cfg.logging
        sample = self.sample_override if self.sample_override >= 0 else c.sample
        p = Policy(sample, frozenset(c.routing_keys), self.sink_override or c.sink,
                   c.segment_records, c.segment_s, c.recent)
        if not p.sample and not p.keys:
            p = OFF
        if len(self._policies) >= 256:  # configs of versions long reloaded away
            self._policies.clear()
        self._policies[id(cfg)] = (cfg, p)
        return p

    def _decide(self, cfg: ModelConfig, request_id: str | None, key: str | None) -> str | None:
        """`decide`: the id to log a request under, or None when it is not logged. A request
        without a V2 `id` gets one here (returned to the client in the `x-request-id`
        header)."""
        p = self.policy(cfg)
        if p is OFF:
            return None
        if not (p.sample >= 1.0 or (key or request_id) in p.keys or random() < p.sample):
            return None
        return request_id or self._tap.new_id()

    def _capture(
        self, request_id: str, model: str, version: str, route: str, inputs: Inputs,
        outputs: Outputs, latency_s: float, cfg: ModelConfig, rows: int = -1,
    ) -> None:
        """`capture`: copy one answered request into its block. `rows`: the request's (else
        the first input's). Never raises: a request the log cannot take is counted
        (capture_error), and its answer goes out all the same."""
        try:
            policy = self.policy(cfg)
            now = time.time()
            if type(inputs) is not dict:
                inputs = input_arrays(inputs)
            if rows < 0:
                rows = next((len(a) for a in inputs.values() if a.ndim), 0)
            key = (model, version, route)
            with self._lock:
                block = self._open.get(key)
                if block is None or block.policy is not policy or (size := block.add(
                        request_id, now, latency_s, inputs, outputs, rows)) < 0:
                    if block is not None:
                        self._seal(key, block)
                    block = self._open[key] = Block(next(self._numbers), model, version, route,
                                                    policy, inputs, outputs, rows)
                    self._tap.cores[key] = block.core
                    size = block.add(request_id, now, latency_s, inputs, outputs, rows)
                    if size < 0:  # not even a block of its own takes it: not arrays
                        raise TypeError("a logged request's tensors are not numpy arrays")
                    if policy.recent:
                        store = self._stores.get(model)
                        if store is None:
                            store = self._stores[model] = Store()
                        store.keep(block, policy.recent)
                if policy.sink:
                    tap = self._tap
                    tap.pending += 1
                    tap.held += size
                    if tap.pending > self._max_records or tap.held > self._max_bytes:
                        self._shed()
        except Exception:  # the request was answered: logging must not fail it
            self._capture_failed()

    def _later(self, flush: Callable[[], None]) -> None:
        """Run the Tap's flush at the running loop's next pass (RuntimeError: no loop runs in
        this thread, and the Tap takes the record at once)."""
        asyncio.get_running_loop().call_soon(flush)

    def _capture_failed(self) -> None:
        self.dropped["capture_error"] += 1
        if self.dropped["capture_error"] == 1:
            log.exception("payload log: a request could not be captured (counted from now)")

    def _seal(self, key: tuple[str, str, str], block: Block) -> None:
        """Close an open block (lock held): to the writer when it has a sink."""
        del self._open[key]
        self._tap.cores.pop(key, None)
        block.sealed = True
        self._sealed[key] = self._sealed.get(key, 0) + len(block)
        if block.policy.sink:
            self._ready.append(block)

    @property
    def logged(self) -> dict[tuple[str, str, str], int]:
        """Records captured, by model, version and route."""
        with self._lock:
            counts = dict(self._sealed)
            for key, block in self._open.items():
                counts[key] = counts.get(key, 0) + len(block)
        return counts

    def _shed(self) -> None:
        """Drop the oldest records waiting for the writer until they are within both bounds
        (lock held); a record bigger than the byte bound alone is kept, with nothing else.
        While a sink stalls this runs for every capture, so it walks no more blocks than it
        drops from."""
        ready, tap = self._ready, self._tap
        while tap.pending > 1 and (
                tap.pending > self._max_records or tap.held > self._max_bytes):
            while ready and ready[0].start == len(ready[0]):  # emptied: let it go
                ready.popleft().release_inputs()
            block = ready[0] if ready else next(
                b for b in self._open.values() if b.policy.sink and b.start < len(b))
            tap.held -= block.core.size(block.start)
            block.start += 1
            tap.pending -= 1
            self.dropped["buffer_full"] += 1
        while ready and ready[0].start == len(ready[0]):
            ready.popleft().release_inputs()

    def capture_shadow(
        self, request_id: str, model: str, version: str, feeds: dict[str, np.ndarray],
        rows: int, cfg: ModelConfig, fut: asyncio.Future[Any],
    ) -> None:
        """A shadow's answer (its future's done-callback), under the primary's id."""
        if not fut.cancelled() and fut.exception() is None:
            outs, _batch, queue_s, run_s = fut.result()
            self.capture(request_id, model, version, "shadow", feeds, outs, queue_s + run_s, cfg,
                         rows)

    def answers(self, model: str, request_id: str) -> tuple[Answer, ...] | None:
        """What was answered for a request id still in memory (the newest answer that is not
        a shadow's, then the shadows' answers to it), or None."""
        store = self._stores.get(model)
        return store.answers(request_id) if store is not None else None

    @property
    def buffered(self) -> int:
        return self._tap.pending

    # ---- the writer thread -----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="payload-writer",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is buffered, close every open segment, and end the thread. A server
        flushes the queued captures on its loop first."""
        self.flush()
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            self._guarded(force=False)
        self._guarded(force=True)

    def _guarded(self, force: bool) -> None:
        try:
            self.drain(force)
        except Exception:  # the thread must outlive any one bad record or sink
            log.exception("payload writer: a pass failed (its records are lost)")

    def drain(self, force: bool = False) -> None:
        """One pass: seal the open blocks, move what waits into the sinks, close due
        segments."""
        with self._lock:
            opened = time.monotonic() - self.seal_s
            for key, block in list(self._open.items()):
                # a block of a few records waits (up to seal_s): at 1% sampling each pass
                # sealed a block of a handful, and every block costs its own rendering,
                # compression and index
                if block.policy.sink and (force or len(block) >= SEAL_RECORDS
                                          or block.opened <= opened):
                    self._seal(key, block)
            blocks = list(self._ready)
            self._ready.clear()
            waiting = [b for b in self._open.values() if b.policy.sink]
            self._tap.pending = sum(len(b) - b.start for b in waiting)
            self._tap.held = sum(b.core.size(i) for b in waiting for i in range(b.start, len(b)))
        now = time.time()
        by_sink: dict[str, list[Block]] = {}
        for block in blocks:
            if block.start < len(block):
                by_sink.setdefault(block.policy.sink, []).append(block)
        for url, group in by_sink.items():
            self._ship(url, group, now)
        for block in blocks:
            block.release_inputs()
        for url, sink in list(self._sinks.items()):
            self._count_lost(url, sink.flush(now, force))

    def _ship(self, url: str, blocks: list[Block], now: float) -> None:
        records = sum(len(b) - b.start for b in blocks)
        sink = self._sinks.get(url)
        if sink is None:
            try:
                sink = self._sinks[url] = open_sink(url)
            except Exception as exc:
                log.error("payload sink %s cannot be opened: %s", url, exc)
                self.dropped["sink_error"] += records
                return
        try:
            lost = sink.add(blocks, now)
        except (TypeError, ValueError) as exc:  # a record orjson cannot write
            log.error("payload records to %s could not be encoded: %s", url, exc)
            self.dropped["encode_error"] += records
            return
        self.written += records - lost
        self._count_lost(url, lost)

    def _count_lost(self, url: str, lost: int) -> None:
        if lost:
            self.dropped["sink_error"] += lost
            log.warning("payload sink %s lost %d records", url, lost)

    def sink_roots(self, model: str, cfg: ModelConfig) -> list[str]:
        """Local directories holding a model's segments (for joining late feedback)."""
        url = self.policy(cfg).sink or self.sink_override or cfg.logging.sink
        return [url] if url and "://" not in url else []
