"""The payload log: which requests are logged, the bounded buffer the request path appends to,
and the writer thread that renders and ships the records.

On the request path (event loop thread) a logged request costs one `decide` call (a cached
policy lookup and, when sampled, an id) and one `capture` call (a tuple of references appended
to a deque, and to the model's store of recent predictions that feedback joins). Nothing is
copied, serialised or sent there. The writer thread wakes every `tick_s`, takes what the
buffer holds and hands it to the sinks; when a sink is slow the buffer fills, and an append
past its bounds (records, and bytes of the tensors they hold) drops the oldest records
(counted under `buffer_full`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from random import random
from typing import Any

import numpy as np

from serving.model_config import ModelConfig
from serving.payload.feedback import FeedbackBook
from serving.payload.record import (
    OFF,
    SINK,
    Answer,
    Inputs,
    Logged,
    Outputs,
    Policy,
    grouped,
    prediction,
)
from serving.payload.sinks import Sink, open_sink

log = logging.getLogger("serving.payload")
Stored = tuple[float, str, str, str, "np.ndarray | None"]  # time, version, route, kind, values



def held_bytes(*groups: Inputs | Outputs) -> int:
    """About the memory a record's tensors hold: their bytes, and for strings (object
    arrays) 64 bytes an element rather than the 8 of the pointer (a short str object)."""
    n = 0
    for tensors in groups:
        for a in tensors.values() if isinstance(tensors, dict) else [t.data for t in tensors]:
            n += a.nbytes if a.dtype.kind != "O" else a.size * 64
    return n


class PayloadLog:
    """The server's payload logging: per-model policies (model.toml's `[logging]`, with the
    server's overrides), the buffer, the writer thread, and the recent predictions by id."""

    def __init__(
        self, sink: str = "", sample: float = -1.0, buffer: int = 10_000, tick_s: float = 0.05,
        buffer_bytes: int = 256 << 20,
    ) -> None:
        self.sink_override = sink
        self.sample_override = sample
        self.tick_s = tick_s
        # The records waiting for the writer, and the bytes of tensors each holds (the
        # request's arrays, which may be views of its body): bounded in both, the oldest
        # dropped first. The loop appends and drops, the writer takes all: under the lock.
        self._buffer: deque[Logged] = deque()
        self._sizes: deque[int] = deque()
        self._held = 0
        self._max_records, self._max_bytes = buffer, buffer_bytes
        self._lock = threading.Lock()
        self._policies: dict[int, tuple[ModelConfig, Policy]] = {}
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(6)  # ids unique across processes and restarts
        # model -> id -> the answer (primary or canary), and the shadows' answers to the
        # same ids while the primary's is kept: loop thread only. Plain tuples of strings,
        # numbers and arrays, which the garbage collector stops tracking (see Answer).
        self.recent: dict[str, OrderedDict[str, Stored]] = {}
        self.shadowed: dict[str, dict[str, tuple[Stored, ...]]] = {}
        self.logged: dict[tuple[str, str, str], int] = {}  # loop thread: captured records
        self.dropped: dict[str, int] = {"buffer_full": 0, "sink_error": 0, "encode_error": 0}
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

    def decide(self, cfg: ModelConfig, request_id: str | None, key: str | None) -> str | None:
        """The id to log a request under, or None when it is not logged. A request without a
        V2 `id` gets one here (returned to the client in the `x-request-id` header)."""
        p = self.policy(cfg)
        if p is OFF:
            return None
        if not (p.sample >= 1.0 or (key or request_id) in p.keys or random() < p.sample):
            return None
        return request_id or f"{self._prefix}-{next(self._ids)}"

    def capture(
        self, request_id: str, model: str, version: str, route: str, inputs: Inputs,
        outputs: Outputs, latency_s: float, cfg: ModelConfig,
    ) -> None:
        """Hand one answered request to the log (references only)."""
        policy = self.policy(cfg)
        now = time.time()
        key = (model, version, route)
        self.logged[key] = self.logged.get(key, 0) + 1
        if policy.sink:
            self._hold((request_id, now, model, version, route, inputs, outputs, latency_s,
                        policy.sink, policy.segment_records, policy.segment_s),
                       held_bytes(inputs, outputs))
        if not policy.recent:
            return
        # the store of recent predictions, inline: this runs for every logged request
        pred = prediction(outputs)
        # a copy: a view would hold every output array of the request's batch for as long as
        # the store holds the answer
        kind, values = (pred[0], pred[1].copy()) if pred is not None else ("", None)
        kept = (now, version, route, kind, values)  # an exact tuple: untracked
        recent = self.recent.get(model)
        if recent is None:
            recent = self.recent[model] = OrderedDict()
        if route == "shadow":
            if request_id in recent:
                shadowed = self.shadowed.setdefault(model, {})
                shadowed[request_id] = (*shadowed.get(request_id, ()), kept)
        elif recent.setdefault(request_id, kept) is not kept:  # a reused id: the newest counts
            recent[request_id] = kept
            recent.move_to_end(request_id)
        elif len(recent) > policy.recent:
            old, _ = recent.popitem(last=False)
            if self.shadowed.get(model):
                self.shadowed[model].pop(old, None)

    def _hold(self, record: Logged, size: int) -> None:
        """Buffer a record; past either bound drop the oldest (a record bigger than the byte
        bound alone is kept, with nothing else)."""
        with self._lock:
            self._buffer.append(record)
            self._sizes.append(size)
            self._held += size
            if self._held > self._max_bytes or len(self._buffer) > self._max_records:
                self._shed()

    def _shed(self) -> None:
        """Drop the oldest records until the buffer is within its bounds (lock held)."""
        buf, sizes = self._buffer, self._sizes
        while len(buf) > 1 and (len(buf) > self._max_records or self._held > self._max_bytes):
            buf.popleft()
            self._held -= sizes.popleft()
            self.dropped["buffer_full"] += 1

    def capture_shadow(
        self, request_id: str, model: str, version: str, feeds: dict[str, np.ndarray],
        cfg: ModelConfig, fut: asyncio.Future[Any],
    ) -> None:
        """A shadow's answer (its future's done-callback), under the primary's id."""
        if not fut.cancelled() and fut.exception() is None:
            outs, _rows, queue_s, run_s = fut.result()
            self.capture(request_id, model, version, "shadow", feeds, outs, queue_s + run_s, cfg)

    def answers(self, model: str, request_id: str) -> tuple[Answer, ...] | None:
        """What was answered for a request id still in memory (its shadows' answers after the
        primary's), or None."""
        recent = self.recent.get(model)
        kept = recent.get(request_id) if recent is not None else None
        if kept is None:
            return None
        shadows = self.shadowed.get(model, {}).get(request_id, ())
        return tuple(Answer(request_id, t, model, v, r, k, values)
                     for t, v, r, k, values in (kept, *shadows))

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    # ---- the writer thread -----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="payload-writer",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is buffered, close every open segment, and end the thread."""
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
        """One pass: move the buffered records into their sinks, close due segments."""
        with self._lock:
            records = list(self._buffer)
            self._buffer.clear()
            self._sizes.clear()
            self._held = 0
        now = time.time()
        for url, group in (grouped(records, SINK) if records else {}).items():
            self._ship(url, group, now)
        for url, sink in list(self._sinks.items()):
            self._count_lost(url, sink.flush(now, force))

    def _ship(self, url: str, records: list[Logged], now: float) -> None:
        sink = self._sinks.get(url)
        if sink is None:
            try:
                sink = self._sinks[url] = open_sink(url)
            except Exception as exc:
                log.error("payload sink %s cannot be opened: %s", url, exc)
                self.dropped["sink_error"] += len(records)
                return
        try:
            lost = sink.add(records, now)
        except (TypeError, ValueError) as exc:  # a record orjson cannot write
            log.error("payload records to %s could not be encoded: %s", url, exc)
            self.dropped["encode_error"] += len(records)
            return
        self.written += len(records) - lost
        self._count_lost(url, lost)

    def _count_lost(self, url: str, lost: int) -> None:
        if lost:
            self.dropped["sink_error"] += lost
            log.warning("payload sink %s lost %d records", url, lost)

    def sink_roots(self, model: str, cfg: ModelConfig) -> list[str]:
        """Local directories holding a model's segments (for joining late feedback)."""
        url = self.policy(cfg).sink or self.sink_override or cfg.logging.sink
        return [url] if url and "://" not in url else []
