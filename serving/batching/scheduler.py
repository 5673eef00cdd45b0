"""The dynamic batcher: one per loaded model version. The loop queues; worker threads run batches.

The event loop only enqueues and resolves futures. A worker thread gathers a batch's rows into a
reusable contiguous buffer (Cython, no GIL), runs ONNX Runtime (which releases the GIL), splits the
outputs back into per-request views, and hands the results to the loop in one callback per batch.
Batches measured cheaper than a thread hand-off run on the loop itself, for at most
`inline_turn_us` per loop turn before the loop gets to read and answer other connections.
"""

from __future__ import annotations

import asyncio
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Hashable
from queue import SimpleQueue

import numpy as np

from serving.batching.batch import (
    BufferCache,
    Observer,
    Outputs,
    RunResult,
    SessionLike,
    observe,
    run_batch,
)
from serving.batching.policy import BatchPolicy
from serving.errors import BadRequest, Cancelled, DeadlineExceeded, Overloaded, Unavailable
from serving.monitoring.counters import BatchStats
from serving.tracing import RequestTrace, active

Result = tuple[Outputs, int, float, float]  # outputs, rows in the batch, queue s, run s


class _Item:
    """One queued request."""

    __slots__ = (
        "deadline", "disconnected", "enqueued_at", "feeds", "future", "key", "rows", "trace",
    )

    def __init__(
        self,
        feeds: dict[str, np.ndarray],
        rows: int,
        key: Hashable,
        future: asyncio.Future[Result],
        enqueued_at: float,
        deadline: float,
        disconnected: Callable[[], bool] | None,
        trace: RequestTrace | None,
    ) -> None:
        self.feeds = feeds
        self.rows = rows
        self.key = key
        self.future = future
        self.enqueued_at = enqueued_at
        self.deadline = deadline
        self.disconnected = disconnected
        self.trace = trace  # a sampled request's trace (tracing on), else None

    def gone(self, now: float) -> bool:
        """Whether it can no longer join a batch: answered, expired or its client left."""
        return (
            self.future.done()
            or (self.deadline != 0.0 and now >= self.deadline)
            or (self.disconnected is not None and self.disconnected())
        )


class Scheduler:
    """Queue -> batch -> run -> split for one model version."""

    def __init__(
        self, session: SessionLike, policy: BatchPolicy, label: str,
        observer: Observer | None = None,
        stats: BatchStats | None = None,
    ) -> None:
        self.session = session
        self.observer = observer  # per-batch monitoring (drift); never fails a batch
        self.policy = policy
        self.label = label  # "model:version", for error messages and logs
        self.stats = stats if stats is not None else BatchStats()  # the version's, kept
        self._tracer = active()  # None unless tracing is on: one test per batch
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._free = policy.workers
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._jobs: SimpleQueue[list[_Item] | None] = SimpleQueue()
        # Measured session.run seconds by batch-size bucket (rows.bit_length()): for deadline
        # shedding and for choosing inline runs.
        self._run_est = [0.0] * 16
        self._cpu_est = [0.0] * 16
        self._inline_s = policy.inline_max_us * 1e-6
        self._turn_s = policy.inline_turn_us * 1e-6
        self._loop_buffers = BufferCache()
        self._dispatch_pending = False
        self._closed = False
        self._idle: asyncio.Event | None = None
        sig = session.signature
        self._batched = sig.batched and policy.max_batch_size > 1
        # Models whose inputs have variable non-batch dimensions need a shape key per request.
        self._needs_key = any(-1 in t.shape[1:] for t in sig.inputs)
        self._input_names = sig.input_names
        self._threads = [
            threading.Thread(target=self._work, name=f"infer-{label}-{i}", daemon=True)
            for i in range(policy.workers)
        ]
        for t in self._threads:
            t.start()

    # ---- loop side -------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def submit(
        self,
        feeds: dict[str, np.ndarray],
        rows: int,
        timeout_us: int | None = None,
        disconnected: Callable[[], bool] | None = None,
        trace: RequestTrace | None = None,
    ) -> asyncio.Future[Result]:
        """Queue one request; its future gets (outputs, batch rows, queue s, run s). Never
        blocks. `trace`: a sampled request's, stamped with the batch it runs in."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if self._closed:
            raise Overloaded(f"model {self.label} is unloading")
        limit = self.policy.max_request_rows
        if limit and rows > limit:
            raise BadRequest(
                f"request has {rows} rows; model {self.label} takes at most "
                f"{limit} per request (max_batch_size)"
            )
        if len(self._queue) >= self.policy.max_queue_size:
            self.stats.reject("queue_full")
            raise Overloaded(
                f"model {self.label} queue is full ({self.policy.max_queue_size} requests); "
                "retry later"
            )
        now = time.monotonic()
        # Keyed by the model's input order, not the request's.
        key = tuple(feeds[n].shape[1:] for n in self._input_names) if self._needs_key else None
        future: asyncio.Future[Result] = loop.create_future()
        deadline = self.policy.deadline(now, timeout_us)
        self._queue.append(_Item(feeds, rows, key, future, now, deadline, disconnected, trace))
        self._queued_rows += rows
        self.stats.requests += 1
        self._schedule_dispatch()
        return future

    def _drop(self, item: _Item, exc: Exception, reason: str) -> None:
        self._queued_rows -= item.rows
        self.stats.reject(reason)
        if not item.future.done():
            item.future.set_exception(exc)

    def _schedule_dispatch(self) -> None:
        """Dispatch once at the end of this loop iteration, so that every request decoded in
        the same iteration joins one batch (batching with no added delay)."""
        if not self._dispatch_pending:
            self._dispatch_pending = True
            assert self._loop is not None
            self._loop.call_soon(self._dispatch)

    def _estimate(self, rows: int) -> float:
        """Expected run seconds (wall) for a batch of `rows` (0.0 while unmeasured)."""
        return self._run_est[min(rows.bit_length(), 15)]

    def _measured(self, rows: int, run_s: float, cpu_s: float) -> None:
        b = min(rows.bit_length(), 15)
        old = self._run_est[b]
        self._run_est[b] = run_s if not old else 0.8 * old + 0.2 * run_s
        old = self._cpu_est[b]
        self._cpu_est[b] = cpu_s if not old else 0.8 * old + 0.2 * cpu_s

    def _dispatch(self) -> None:
        """Form batches from the queue and run them: inline when cheap, else on a free worker."""
        self._dispatch_pending = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            self._form_batches()
        finally:
            if self._idle is not None and not self._queue and not self._in_flight:
                self._idle.set()  # a drain() is waiting for exactly this

    def _shed_head(self, now: float) -> bool:
        """Drop the head of the queue if it cannot or need not run any more."""
        head = self._queue[0]
        if head.future.done():  # cancelled by its awaiting task
            self._queue.popleft()
            self._queued_rows -= head.rows
            return True
        if head.disconnected is not None and head.disconnected():
            self._queue.popleft()
            self._drop(head, Cancelled(f"client disconnected before {self.label} ran"),
                       "cancelled")
            return True
        if not head.deadline:
            return False
        if now >= head.deadline:
            exc = DeadlineExceeded(f"request timed out in queue for model {self.label}")
        else:
            expected = self._estimate(head.rows)
            if now + expected <= head.deadline:
                return False
            exc = DeadlineExceeded(
                f"request would miss its deadline: model {self.label} takes about "
                f"{expected * 1e6:.0f} us to run it"
            )
        self._queue.popleft()
        self._drop(head, exc, "timeout")
        return True

    def _wait_for_company(self, now: float) -> bool:
        """Arm a timer and say so when the policy wants a fuller batch than what is queued."""
        head = self._queue[0]
        wait = self.policy.should_wait(self._queued_rows, head.enqueued_at, now)
        if wait > 0.0 and head.deadline:
            wait = min(wait, head.deadline - now)  # wake to expire it on time
        if wait <= 0.0:
            return False
        assert self._loop is not None
        self._timer = self._loop.call_later(wait, self._dispatch)
        return True

    def _take(self, now: float) -> tuple[list[_Item], int]:
        """Pop the head and the requests behind it that can share its batch, in queue order."""
        queue = self._queue
        head = queue.popleft()
        batch, rows = [head], head.rows
        if self._batched:
            limit = self.policy.max_batch_size
            while queue:
                nxt = queue[0]
                if rows + nxt.rows > limit or nxt.key != head.key or nxt.gone(now):
                    break  # a gone one is left to the head-of-queue checks on the next turn
                batch.append(queue.popleft())
                rows += nxt.rows
        self._queued_rows -= rows
        return batch, rows

    def _form_batches(self) -> None:
        queue = self._queue
        inline_s = self._inline_s
        turn_ends = 0.0  # set by the first inline run of this turn
        while queue and (self._free or inline_s):
            now = time.monotonic()
            if turn_ends and now >= turn_ends:
                # This turn's share of inline work is spent: let the loop read and answer
                # other connections, and continue behind them.
                self._schedule_dispatch()
                return
            if self._shed_head(now):
                continue
            if self._batched and self._wait_for_company(now):
                return
            batch, rows = self._take(now)
            # The inline decision uses the run's CPU time: a worker's wall time also counts its
            # wait for the GIL, which would keep a cheap model on threads for good.
            estimate = self._cpu_est[min(rows.bit_length(), 15)]
            if inline_s and 0.0 < estimate <= inline_s:
                # Cheaper to run here than to hand to a thread and back (two context switches
                # and a self-pipe wake-up cost more than a few-microsecond session.run).
                if not turn_ends:
                    turn_ends = now + self._turn_s
                self._run_inline(batch, rows, now)
                continue
            if not self._free:
                queue.extendleft(reversed(batch))
                self._queued_rows += rows
                return
            self._free -= 1
            self._in_flight += len(batch)
            self._jobs.put(batch)

    def _run_inline(self, batch: list[_Item], rows: int, now: float) -> None:
        # A batch of one request runs on that request's own arrays, so monitoring can wait
        # until the answer is on its way (call_soon: behind the request's wake-up, and still
        # before the loop reads another request, so a drift report never misses it); a bigger
        # batch's feeds sit in buffers the next inline batch reuses, so it is observed at once.
        alone = len(batch) == 1
        outputs, error, run_s, cpu_s = run_batch(
            self.session, self.label, [item.feeds for item in batch],
            [item.rows for item in batch], batch[0].key, self.policy.max_batch_size,
            self._loop_buffers, None if alone else self.observer, on_loop=True)
        self._measured(rows, run_s, cpu_s)
        self._finish(batch, outputs, error, rows, now, run_s)
        if alone and outputs is not None and self.observer is not None:
            assert self._loop is not None
            self._loop.call_soon(observe, self.observer, self.label, batch[0].feeds, outputs[0])

    def _finish(
        self, batch: list[_Item], outputs: list[Outputs] | None, error: Exception | None,
        rows: int, started: float, run_s: float,
    ) -> None:
        """Resolve a batch's futures and account for it."""
        stats = self.stats
        stats.batches += 1
        stats.rows += rows
        stats.run_seconds += run_s
        stats.batch_sizes.observe(rows)
        if self._tracer is not None:
            self._tracer.batch_ran(batch, self.label, rows, started, error)
        if error is not None:
            stats.failed_batches += 1
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        assert outputs is not None
        stats.executed(rows, run_s)
        q_counts, q_bounds = stats.queue_time.counts, stats.queue_time.bounds
        total = 0.0
        for item, out in zip(batch, outputs, strict=True):
            waited = started - item.enqueued_at
            total += waited
            q_counts[bisect_left(q_bounds, waited)] += 1
            if not item.future.done():
                item.future.set_result((out, rows, waited, run_s))
        stats.queue_time.total += total

    def _complete(self, batch: list[_Item], r: RunResult, rows: int, started: float) -> None:
        """On the loop, for a worker's batch: resolve, free the worker, dispatch what waits."""
        self._free += 1
        self._in_flight -= len(batch)
        outputs, error, run_s, cpu_s = r
        self._measured(rows, run_s, cpu_s)
        self._finish(batch, outputs, error, rows, started, run_s)
        if self._queue:
            self._dispatch()
        elif self._idle is not None and not self._in_flight:
            self._idle.set()  # a drain() is waiting for exactly this

    # ---- worker threads --------------------------------------------------------------------

    def _work(self) -> None:
        buffers = BufferCache()
        capacity = self.policy.max_batch_size
        while True:
            batch = self._jobs.get()
            if batch is None:
                return
            started = time.monotonic()
            counts = [item.rows for item in batch]
            r = run_batch(self.session, self.label, [item.feeds for item in batch], counts,
                          batch[0].key, capacity, buffers, self.observer)
            loop = self._loop
            assert loop is not None
            try:
                loop.call_soon_threadsafe(self._complete, batch, r, sum(counts), started)
            except RuntimeError:  # the loop is closed: the server is gone
                return

    # ---- shutdown --------------------------------------------------------------------------

    async def drain(self) -> None:
        """Stop taking requests and wait until everything queued or running has finished."""
        self._closed = True
        while self._queue or self._in_flight:
            self._idle = asyncio.Event()
            await self._idle.wait()

    def close(self) -> None:
        """Stop the worker threads (after drain). Requests still queued (a drain that ran out
        of time) are answered 503 now rather than left waiting for a batch that never comes."""
        self._closed = True
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(
                    Unavailable("the model version was unloaded before this request ran"))
        for _ in self._threads:
            self._jobs.put(None)
