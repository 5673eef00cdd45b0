"""The dynamic batcher's limits through a real server: a full queue, deadlines, clients that
disconnect, failing runs (same server and models as test_batching_e2e.py)."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from tests.batching.server import (
    TABLE,
    Answer,
    concurrently,
    infer,
    metric,
    one,
    rows,
    v2_body,
    with_client,
)
from tests.conftest import RunningServer

pytestmark = pytest.mark.e2e  # real server processes (the slow lane)


# ---- queue full --------------------------------------------------------------------------------


def test_full_queue_answers_503_with_retry_after_then_serves(srv) -> None:
    # workers = 1, max_queue_size = 2, delay 1 s: the first two requests sit in the queue
    # waiting for company, the rest find it full and are refused at once.
    xs = [rows(1, seed=i) for i in range(8)]
    answers = concurrently(srv, "small_queue", [{"x": x} for x in xs])
    ok = [(x, a) for x, a in zip(xs, answers, strict=True) if a.status == 200]
    refused = [a for a in answers if a.status != 200]
    assert ok
    for x, a in ok:
        np.testing.assert_array_equal(a.output("y_x"), x)
        assert a.batch_size <= 2  # a batch comes out of a queue that never holds more than 2
    assert refused
    for a in refused:
        assert a.status == 503
        assert "queue is full" in a.error
        assert "small_queue" in a.error
        assert a.headers["retry-after"].isdigit()
    after = one(srv, "small_queue", {"x": rows(1, seed=99)})
    np.testing.assert_array_equal(after.output("y_x"), rows(1, seed=99))


# ---- deadlines ---------------------------------------------------------------------------------


def assert_timed_out(a: Answer, model: str) -> None:
    assert a.status == 503, a.doc
    assert "timed out in queue" in a.error
    assert model in a.error
    assert "retry-after" in a.headers
    assert a.elapsed < 5


def test_default_timeout_expires_in_queue_and_request_cannot_lengthen_it(srv) -> None:
    # default_timeout_us 100 ms, delay 600 ms: the deadline passes while the request waits.
    answers = concurrently(srv, "deadline", [{"x": rows(1)}, {"x": rows(1, seed=1)}],
                           [None, {"timeout": 10_000_000}])
    for a in answers:
        assert_timed_out(a, "deadline")


def test_request_timeout_shortens_the_deadline(srv) -> None:
    # No model default; delay 600 ms. Only the request asking for 100 ms times out.
    xs = [rows(1, seed=i) for i in range(3)]
    answers = concurrently(srv, "shorten", [{"x": x} for x in xs],
                           [{"timeout": 100_000}, None, {"timeout": 5_000_000}])
    assert_timed_out(answers[0], "shorten")
    for x, a in zip(xs[1:], answers[1:], strict=True):
        np.testing.assert_array_equal(a.output("y_x"), x)


def test_timeout_parameter_must_be_a_non_negative_integer(srv) -> None:
    a = one(srv, "shorten", {"x": rows(1)}, {"timeout": -5})
    assert a.status == 400
    assert "timeout" in a.error


# ---- client disconnects ------------------------------------------------------------------------


async def _give_up(srv: RunningServer, model: str, x: np.ndarray, delay: float = 0.0) -> None:
    """Send a request and hang up after 0.5 s, while it is still queued."""
    await asyncio.sleep(delay)
    async with httpx.AsyncClient(base_url=srv.url, timeout=0.5) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post(f"/v2/models/{model}/infer", content=v2_body({"x": x}))


def test_disconnected_request_at_the_head_of_the_queue_is_dropped(srv) -> None:
    # preferred [2], delay 1.5 s. The next request has 2 rows: alone it makes the preferred size
    # and runs at once; were the gone request's row still queued, they would run as 3 rows.
    async def go(c: httpx.AsyncClient) -> Answer:
        await _give_up(srv, "gone_head", rows(1, seed=1))
        return await infer(c, "gone_head", {"x": rows(2, seed=2)}, delay=0.3)

    a = with_client(srv, go)
    np.testing.assert_array_equal(a.output("y_x"), rows(2, seed=2))
    assert a.batch_size == 2
    # The server counted the drop, and ran only the next request's two rows.
    assert metric(srv, "serving_rejected_requests_total", model="gone_head",
                  reason="cancelled") == 1
    assert metric(srv, "serving_batch_rows_total", model="gone_head") == 2


def test_disconnected_request_behind_the_head_is_not_run(srv) -> None:
    # preferred [3], delay 1.5 s: first (waits), gone (hangs up at 0.5 s), last. Three queued
    # rows make the preferred size, but the gone client's row must not be run with the others.
    async def go(c: httpx.AsyncClient) -> list[Answer]:
        first = asyncio.ensure_future(infer(c, "gone_middle", {"x": rows(1, seed=1)}))
        await _give_up(srv, "gone_middle", rows(1, seed=2), delay=0.1)
        last = await infer(c, "gone_middle", {"x": rows(1, seed=3)}, delay=0.3)
        return [await first, last]

    answers = with_client(srv, go)
    for seed, a in zip((1, 3), answers, strict=True):
        np.testing.assert_array_equal(a.output("y_x"), rows(1, seed=seed))
        assert a.batch_size <= 2
    assert metric(srv, "serving_rejected_requests_total", model="gone_middle",
                  reason="cancelled") == 1
    assert metric(srv, "serving_batch_rows_total", model="gone_middle") == 2


# ---- failing runs ------------------------------------------------------------------------------


def idx(*values: int) -> dict[str, np.ndarray]:
    return {"idx": np.asarray(values, dtype=np.int64).reshape(-1, 1)}


def test_failing_batch_answers_500_and_the_worker_survives(srv) -> None:
    # Index 7 is out of the table's range: ONNX Runtime fails the batch it runs in.
    for _ in range(2):
        answers = concurrently(srv, "lookup", [idx(1), idx(7)])  # one batch (preferred [2])
        for a in answers:
            assert a.status == 500, a.doc
            assert "lookup" in a.error
        good = one(srv, "lookup", idx(2, 4))
        np.testing.assert_array_equal(good.output("y_idx"), [[TABLE[2]], [TABLE[4]]])
        assert good.batch_size == 2
