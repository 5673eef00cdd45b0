"""The dynamic batcher's semantics (Triton's names and meaning), observed through a real server:
batch formation, max_batch_size, the queue delay and preferred sizes, shapes, unbatched models.

One server (tests/batching/conftest.py) over a registry of small onnx.helper models, each with its
own `[batching]` table. What a request can observe: its status, its JSON error, its headers, its
answer and `parameters.batch_size` (the rows of the batch it ran in). Times are checked only as
generous behaviour bounds (did it wait for the delay or not), never as speed.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.batching.server import (
    concurrently,
    one,
    rows,
)

pytestmark = pytest.mark.e2e  # real server processes (the slow lane)


# ---- batching, max_batch_size, no splitting ----------------------------------------------------


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(srv) -> None:
    rng = np.random.default_rng(7)
    sizes = [int(n) for n in rng.integers(1, 4, size=30)]  # 1..3 rows, max_batch_size is 4
    xs = [rows(n, seed=100 * i) for i, n in enumerate(sizes)]
    answers = concurrently(srv, "batched", [{"x": x} for x in xs])
    for x, a in zip(xs, answers, strict=True):
        assert a.status == 200, a.doc
        np.testing.assert_array_equal(a.output("y_x"), x)  # its own rows, all of them
        assert len(x) <= a.batch_size <= 4  # never split, never above max_batch_size
    assert max(a.batch_size for a in answers) > 1


def test_request_with_more_rows_than_max_batch_size_is_400(srv) -> None:
    a = one(srv, "batched", {"x": rows(5)})
    assert a.status == 400
    assert "max_batch_size" in a.error
    assert one(srv, "batched", {"x": rows(4)}).batch_size == 4  # exactly the limit is fine


def test_max_batch_size_one_still_limits_rows_per_request(srv) -> None:
    # README: max_batch_size is "also the most rows one request may carry"; Triton rejects a
    # batch-2 request to a max_batch_size 1 model.
    a = one(srv, "one", {"x": rows(2)})
    assert a.status == 400, a.doc
    assert "max_batch_size" in a.error


def test_batch_taken_at_max_batch_size_without_waiting_for_the_delay(srv) -> None:
    # delay 10 s, no preferred sizes: four one-row requests fill max_batch_size (4) and go.
    xs = [rows(1, seed=i) for i in range(4)]
    started = time.monotonic()
    answers = concurrently(srv, "fill", [{"x": x} for x in xs])
    assert time.monotonic() - started < 5
    for x, a in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(a.output("y_x"), x)
        assert a.batch_size == 4


# ---- max_queue_delay_us and preferred_batch_sizes ----------------------------------------------


def test_lone_request_waits_about_the_queue_delay(srv) -> None:
    a = one(srv, "delayed", {"x": rows(1)})  # delay 200 ms, preferred [4]
    assert a.batch_size == 1
    assert 0.15 <= a.elapsed < 5


def test_requests_sent_within_the_delay_run_together(srv) -> None:
    xs = [rows(1, seed=i) for i in range(3)]  # delay 1 s, preferred [4]: three wait together
    answers = concurrently(srv, "together", [{"x": x} for x in xs])
    for x, a in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(a.output("y_x"), x)
        assert a.batch_size == 3


@pytest.mark.parametrize("model", [
    pytest.param("preferred", id="preferred-4"),
    pytest.param("preferred48", id="preferred-4-8"),  # 4 is preferred even though 8 could come
])
def test_preferred_batch_size_runs_without_waiting_for_the_delay(srv, model: str) -> None:
    xs = [rows(1, seed=i) for i in range(4)]  # delay 10 s
    started = time.monotonic()
    answers = concurrently(srv, model, [{"x": x} for x in xs])
    assert time.monotonic() - started < 5
    for x, a in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(a.output("y_x"), x)
        assert a.batch_size == 4


def test_zero_delay_never_waits(srv) -> None:
    # preferred [4] but delay 0: a lone request is not held back for company.
    for i in range(3):
        a = one(srv, "nodelay", {"x": rows(1, seed=i)})
        np.testing.assert_array_equal(a.output("y_x"), rows(1, seed=i))
        assert a.batch_size == 1
        assert a.elapsed < 5


# ---- shapes ------------------------------------------------------------------------------------


def test_requests_with_different_non_batch_dims_are_not_mixed(srv) -> None:
    widths = [2, 3, 5, 2, 3, 5, 2, 3, 5]
    xs = [rows(1 + i % 2, width=m, seed=10 * i) for i, m in enumerate(widths)]
    answers = concurrently(srv, "ragged", [{"x": x} for x in xs])
    rows_of_width = {m: sum(len(x) for x in xs if x.shape[1] == m) for m in set(widths)}
    for x, a in zip(xs, answers, strict=True):
        assert a.status == 200, a.doc
        np.testing.assert_array_equal(a.output("y_x"), x)
        assert len(x) <= a.batch_size <= rows_of_width[x.shape[1]]


def test_requests_with_the_same_variable_dims_are_batched(srv) -> None:
    xs = [rows(1, width=4, seed=i) for i in range(3)]  # preferred [3]
    answers = concurrently(srv, "ragged3", [{"x": x} for x in xs])
    for x, a in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(a.output("y_x"), x)
        assert a.batch_size == 3


def test_shapes_are_compared_per_input_name_not_per_position(srv) -> None:
    # Two inputs a [N, A] and b [N, B]. The first request sends a (1x2) then b (1x3); the second
    # lists b first: b (1x2), a (1x3). Their shapes differ input by input, so they must not be
    # gathered into one batch, whatever order the client listed the inputs in.
    first = {"a": rows(1, width=2, seed=1), "b": rows(1, width=3, seed=2)}
    second = {"b": rows(1, width=2, seed=3), "a": rows(1, width=3, seed=4)}
    answers = concurrently(srv, "pair", [first, second])
    for x, a in zip((first, second), answers, strict=True):
        assert a.status == 200, a.doc
        np.testing.assert_array_equal(a.output("y_a"), x["a"])
        np.testing.assert_array_equal(a.output("y_b"), x["b"])


# ---- models that run unbatched -----------------------------------------------------------------


def test_model_without_batch_dimension_runs_unbatched(srv) -> None:
    # [batching] asks for a 10 s delay; a model with no batch dimension cannot batch, so it
    # neither waits nor mixes requests.
    xs = [rows(2, seed=i) for i in range(6)]
    started = time.monotonic()
    answers = concurrently(srv, "fixed", [{"x": x} for x in xs])
    assert time.monotonic() - started < 5
    for x, a in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(a.output("y_x"), 2 * x)
        assert a.batch_size == 1
    wrong = one(srv, "fixed", {"x": rows(3)})
    assert wrong.status == 400
    assert "[2, 3]" in wrong.error


def test_batching_disabled_runs_each_request_alone(srv) -> None:
    sizes = [1, 2, 3, 1, 2, 3]
    xs = [rows(n, seed=i) for i, n in enumerate(sizes)]
    started = time.monotonic()
    answers = concurrently(srv, "off", [{"x": x} for x in xs])
    assert time.monotonic() - started < 5  # its 10 s delay does not apply
    for x, a in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(a.output("y_x"), x)
        assert a.batch_size == len(x)
