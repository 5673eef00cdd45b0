"""The scheduler on a real event loop with a fake session (no server, no ONNX Runtime): batch
formation, the inline budget per loop turn, deadlines, drain, refusals and BYTES batches."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from time import thread_time
from typing import Any, TypeVar

import numpy as np
import pytest

from serving.batching.policy import BatchPolicy
from serving.batching.scheduler import Scheduler
from serving.errors import Cancelled, DeadlineExceeded, ModelError, Overloaded, Unavailable
from serving.signature import Signature
from serving.types import TensorSpec

T = TypeVar("T")
FP32 = (TensorSpec("x", "FP32", (-1, 2)),), (TensorSpec("y", "FP32", (-1, 2)),)


class FakeSession:
    """Identity over every input (x* -> y*), with an optional gate and a CPU cost per run."""

    def __init__(
        self, specs: tuple[Sequence[TensorSpec], Sequence[TensorSpec]] = FP32,
        cost_s: float = 0.0, gated: bool = False, fail: bool = False,
    ) -> None:
        self.signature = Signature(*specs)
        self.single_threaded = True
        self.cost_s = cost_s
        self.fail = fail
        self.calls: list[int] = []  # rows of each run, in order
        self.entered = threading.Event()  # a run has started
        self.gate = threading.Event()  # runs wait for it when gated
        if not gated:
            self.gate.set()

    def run(self, feeds: dict[str, np.ndarray], names: list[str] | None) -> list[np.ndarray]:
        self.entered.set()
        self.gate.wait(10)
        if self.cost_s:
            end = thread_time() + self.cost_s
            while thread_time() < end:
                pass
        self.calls.append(len(next(iter(feeds.values()))))
        if self.fail:
            raise RuntimeError("boom")
        return [np.array(feeds[t.name], copy=True) for t in self.signature.inputs]


def policy(**kw: Any) -> BatchPolicy:
    base: dict[str, Any] = {"max_batch_size": 8, "max_request_rows": 8, "inline_max_us": 0}
    return BatchPolicy(**{**base, **kw})


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll the condition, yielding to the loop, until it holds (or fail after `timeout`)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


def rows(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array([[v, v] for v in values], np.float32)}


async def busy_worker(sched: Scheduler, session: FakeSession) -> Awaitable[Any]:
    """Occupy the only worker with one request held at the session's gate."""
    first = sched.submit(rows(-1.0), 1)
    await until(session.entered.is_set)
    return first


# ---- batch formation ---------------------------------------------------------------------------


def test_requests_queued_in_one_turn_share_one_batch_in_order() -> None:
    session = FakeSession()
    sched = Scheduler(session, policy(), "m:1")

    async def scenario() -> list[Any]:
        futures = [sched.submit(rows(float(i)), 1) for i in range(5)]
        return list(await asyncio.gather(*futures))

    results = run(scenario)
    sched.close()
    assert session.calls == [5]
    for i, (outputs, batch_rows, _queued_s, _run_s) in enumerate(results):
        assert batch_rows == 5
        np.testing.assert_array_equal(outputs["y"], [[i, i]])


def test_batches_are_cut_at_max_batch_size_in_queue_order() -> None:
    session = FakeSession(gated=True)
    sched = Scheduler(session, policy(max_batch_size=4, max_request_rows=4), "m:1")

    async def scenario() -> list[Any]:
        first = await busy_worker(sched, session)
        futures = [sched.submit(rows(float(i)), 1) for i in range(10)]
        session.gate.set()
        return list(await asyncio.gather(first, *futures))

    results = run(scenario)
    sched.close()
    assert session.calls == [1, 4, 4, 2]
    got = [float(out["y"][0, 0]) for out, *_ in results[1:]]
    assert got == [float(i) for i in range(10)]


def test_a_failed_batch_fails_each_of_its_requests() -> None:
    session = FakeSession(fail=True)
    sched = Scheduler(session, policy(), "m:1")

    async def scenario() -> list[Any]:
        futures = [sched.submit(rows(1.0), 1) for _ in range(3)]
        return list(await asyncio.gather(*futures, return_exceptions=True))

    results = run(scenario)
    sched.close()
    assert all(isinstance(r, ModelError) for r in results)
    assert sched.stats.failed_batches == 1


# ---- inline runs -------------------------------------------------------------------------------


def test_inline_runs_give_the_loop_back_once_their_turn_budget_is_spent() -> None:
    # A model without a batch dimension, ~1 ms per run, measured cheap enough to run inline:
    # 30 queued requests must not hold the loop for 30 ms in one turn.
    specs = (TensorSpec("x", "FP32", (2,)),), (TensorSpec("y", "FP32", (2,)),)
    session = FakeSession(specs, cost_s=0.001)
    sched = Scheduler(
        session, policy(max_batch_size=1, max_request_rows=0, inline_max_us=10_000,
                        inline_turn_us=2_000), "m:1")
    one = {"x": np.ones(2, np.float32)}

    async def scenario() -> list[int]:
        await sched.submit(one, 1)  # the first run is measured on the worker thread
        futures = [sched.submit(one, 1) for _ in range(30)]
        done = asyncio.gather(*futures)
        seen: list[int] = []  # runs done, sampled once per loop turn
        while not done.done():
            seen.append(len(session.calls))
            await asyncio.sleep(0)
        await done
        return [b - a for a, b in itertools.pairwise(seen)]

    per_turn = run(scenario)
    sched.close()
    assert len(session.calls) == 31
    assert max(per_turn) <= 4, f"runs per loop turn: {per_turn}"


# ---- monitoring ----------------------------------------------------------------------------------


def test_every_batch_is_observed_with_its_rows_on_a_worker_and_inline() -> None:
    seen: list[tuple[list[float], list[float]]] = []
    session = FakeSession(cost_s=1e-5)
    sched = Scheduler(session, policy(inline_max_us=1_000_000), "m:1",
                      observer=lambda f, o: seen.append((f["x"][:, 0].tolist(),
                                                         o["y"][:, 0].tolist())))

    async def scenario() -> None:
        await sched.submit(rows(1.0), 1)  # no estimate yet: a worker runs it
        await asyncio.gather(sched.submit(rows(2.0), 1), sched.submit(rows(3.0), 1))
        await sched.submit(rows(4.0), 1)  # measured cheap: inline
        await until(lambda: len(seen) == 3)

    run(scenario)
    sched.close()
    assert sorted(seen) == [([1.0], [1.0]), ([2.0, 3.0], [2.0, 3.0]), ([4.0], [4.0])]


def test_a_lone_request_is_observed_after_it_is_answered() -> None:
    """Monitoring is off the critical section for a batch of one request (its own arrays);
    a bigger inline batch sits in reused buffers, so it is observed before they are reused."""
    owner: dict[int, tuple[np.ndarray, asyncio.Future[Any]]] = {}
    answered: list[bool | None] = []  # per observation: its request answered (None: a batch)

    def observer(feeds: dict[str, np.ndarray], _outputs: dict[str, np.ndarray]) -> None:
        mine = owner.get(id(feeds["x"]))
        answered.append(None if mine is None else mine[1].done())

    session = FakeSession(cost_s=1e-5)
    sched = Scheduler(session, policy(inline_max_us=1_000_000), "m:1", observer=observer)

    def submit(value: float) -> asyncio.Future[Any]:
        feeds = rows(value)
        future = sched.submit(feeds, 1)
        owner[id(feeds["x"])] = (feeds["x"], future)
        return future

    async def scenario() -> None:
        await submit(0.0)  # no estimates yet: workers run and measure both sizes
        await asyncio.gather(submit(1.0), submit(2.0))
        await until(lambda: len(answered) == 2)
        answered.clear()
        await submit(3.0)  # inline from here on
        await asyncio.gather(submit(4.0), submit(5.0))
        await until(lambda: len(answered) == 2)

    run(scenario)
    sched.close()
    assert answered == [True, None]


# ---- deadlines ---------------------------------------------------------------------------------


def test_a_request_that_expires_in_the_queue_gets_deadline_exceeded() -> None:
    session = FakeSession(gated=True)
    sched = Scheduler(session, policy(), "m:1")

    async def scenario() -> tuple[Any, BaseException | None]:
        first = await busy_worker(sched, session)
        late = sched.submit(rows(1.0), 1, timeout_us=1_000)
        expires = time.monotonic() + 0.001
        await until(lambda: time.monotonic() > expires)
        session.gate.set()
        ok = await first
        try:
            await late
        except DeadlineExceeded as exc:
            return ok, exc
        return ok, None

    ok, exc = run(scenario)
    sched.close()
    assert ok[1] == 1
    assert exc is not None and "timed out in queue" in str(exc)
    assert exc.status == 503
    assert session.calls == [1]
    assert sched.stats.rejected == {"timeout": 1}


def test_a_request_that_would_miss_its_deadline_is_shed_before_it_runs() -> None:
    session = FakeSession(cost_s=0.02)
    sched = Scheduler(session, policy(), "m:1")

    async def scenario() -> None:
        await sched.submit(rows(1.0), 1)  # measures ~20 ms per run
        with pytest.raises(DeadlineExceeded, match="would miss its deadline"):
            await sched.submit(rows(1.0), 1, timeout_us=5_000)

    run(scenario)
    sched.close()
    assert session.calls == [1]


# ---- refusals and departures -------------------------------------------------------------------


def test_a_full_queue_refuses_at_once() -> None:
    session = FakeSession(gated=True)
    sched = Scheduler(session, policy(max_queue_size=2), "m:1")

    async def scenario() -> None:
        first = await busy_worker(sched, session)
        queued = [sched.submit(rows(1.0), 1) for _ in range(2)]
        with pytest.raises(Overloaded, match="queue is full"):
            sched.submit(rows(1.0), 1)
        session.gate.set()
        await asyncio.gather(first, *queued)

    run(scenario)
    sched.close()
    assert sched.stats.rejected == {"queue_full": 1}


def test_cancelled_and_disconnected_requests_never_run() -> None:
    session = FakeSession(gated=True)
    sched = Scheduler(session, policy(), "m:1")

    async def scenario() -> None:
        first = await busy_worker(sched, session)
        gone = sched.submit(rows(2.0), 1, disconnected=lambda: True)
        cancelled = sched.submit(rows(3.0), 1)
        cancelled.cancel()
        kept = sched.submit(rows(4.0), 1)
        session.gate.set()
        await first
        with pytest.raises(Cancelled):
            await gone
        out, batch_rows, *_ = await kept
        assert batch_rows == 1 and float(out["y"][0, 0]) == 4.0

    run(scenario)
    sched.close()
    assert session.calls == [1, 1]


# ---- drain -------------------------------------------------------------------------------------


def test_drain_waits_for_queued_and_running_requests_then_refuses_new_ones() -> None:
    session = FakeSession(gated=True)
    sched = Scheduler(session, policy(), "m:1")

    async def scenario() -> None:
        first = await busy_worker(sched, session)
        queued = [sched.submit(rows(float(i)), 1) for i in range(3)]
        drain = asyncio.ensure_future(sched.drain())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not drain.done()  # the worker still holds a request
        session.gate.set()
        await asyncio.wait_for(drain, 5)
        assert first.done() and all(f.done() and f.exception() is None for f in queued)
        with pytest.raises(Overloaded, match="unloading"):
            sched.submit(rows(1.0), 1)

    run(scenario)
    sched.close()
    assert session.calls == [1, 3]


def test_close_after_a_drain_that_timed_out_answers_the_queued_requests() -> None:
    """A drain cut short by [versions] drain_timeout_s leaves requests queued behind a stuck
    batch; closing answers them 503 at once instead of leaving them waiting forever."""
    session = FakeSession(gated=True)
    sched = Scheduler(session, policy(), "m:1")

    async def scenario() -> None:
        await busy_worker(sched, session)
        queued = [sched.submit(rows(float(i)), 1) for i in range(3)]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sched.drain(), 0.05)
        sched.close()
        for f in queued:
            assert f.done()
            with pytest.raises(Unavailable, match="unloaded before this request ran"):
                f.result()
        session.gate.set()

    run(scenario)


# ---- BYTES and variable shapes -----------------------------------------------------------------


def test_bytes_requests_share_a_batch_and_each_gets_its_own_strings() -> None:
    specs = (TensorSpec("x", "BYTES", (-1, 2)),), (TensorSpec("y", "BYTES", (-1, 2)),)
    session = FakeSession(specs)
    sched = Scheduler(session, policy(), "m:1")
    texts = [[["a", "héllo"]], [["", "x y z"], [b"raw", "z"]], [["q", "r"]]]

    async def scenario() -> list[Any]:
        futures = [sched.submit({"x": np.array(t, dtype=object)}, len(t)) for t in texts]
        return list(await asyncio.gather(*futures))

    results = run(scenario)
    sched.close()
    assert session.calls == [4]
    for t, (outputs, batch_rows, *_) in zip(texts, results, strict=True):
        assert batch_rows == 4
        assert outputs["y"].tolist() == t


def test_requests_with_different_inner_shapes_batch_only_with_their_own_shape() -> None:
    specs = (TensorSpec("x", "FP32", (-1, -1)),), (TensorSpec("y", "FP32", (-1, -1)),)
    session = FakeSession(specs)
    sched = Scheduler(session, policy(), "m:1")
    widths = [1, 1, 3, 3, 2, 5, 5, 5] * 3

    async def scenario() -> list[Any]:
        futures = [sched.submit({"x": np.full((1, w), i, np.float32)}, 1)
                   for i, w in enumerate(widths)]
        return list(await asyncio.gather(*futures))

    results = run(scenario)
    sched.close()
    for i, (w, (outputs, *_)) in enumerate(zip(widths, results, strict=True)):
        np.testing.assert_array_equal(outputs["y"], np.full((1, w), i, np.float32))
    assert sum(session.calls) == len(widths)
