"""BatchPolicy over plain numbers: when a free worker waits for company, and request deadlines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.batching.policy import BatchPolicy
from serving.model_config import BatchingConfig

T0 = 1000.0  # monotonic seconds when the oldest request was queued


def policy(**kw: object) -> BatchPolicy:
    return BatchPolicy(**kw)  # type: ignore[arg-type]


# ---- from_config -------------------------------------------------------------------------------


def test_from_config_batched_keeps_the_settings_and_sorts_preferred_sizes() -> None:
    cfg = BatchingConfig(max_batch_size=16, max_queue_delay_us=500, preferred_batch_sizes=(8, 4),
                         max_queue_size=7, default_timeout_us=900, workers=3)
    assert BatchPolicy.from_config(cfg, batched=True) == BatchPolicy(
        max_batch_size=16, preferred_batch_sizes=(4, 8), max_queue_delay_us=500,
        max_queue_size=7, default_timeout_us=900, workers=3, max_request_rows=16,
    )


@pytest.mark.parametrize(
    ("enabled", "batched"),
    [pytest.param(True, False, id="no-batch-dimension"), pytest.param(False, True, id="disabled")],
)
def test_from_config_unbatched_runs_one_request_at_a_time_without_delay(
    enabled: bool, batched: bool
) -> None:
    cfg = BatchingConfig(enabled=enabled, max_batch_size=16, max_queue_delay_us=500,
                         preferred_batch_sizes=(4,), max_queue_size=7, default_timeout_us=900,
                         workers=2)
    # The queue bound, the deadline and the workers still apply; batching and delay do not.
    assert BatchPolicy.from_config(cfg, batched) == BatchPolicy(
        max_batch_size=1, preferred_batch_sizes=(), max_queue_delay_us=0, max_queue_size=7,
        default_timeout_us=900, workers=2,
    )


# ---- should_wait -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "queued_rows", "waited_s", "expected"),
    [
        pytest.param(policy(max_queue_delay_us=0), 1, 0.0, 0.0, id="delay-0-never-waits"),
        pytest.param(policy(max_queue_delay_us=0, preferred_batch_sizes=(4,)), 1, 0.0, 0.0,
                     id="delay-0-ignores-preferred"),
        pytest.param(policy(max_batch_size=8, max_queue_delay_us=1000), 1, 0.0, 0.001,
                     id="waits-the-whole-delay"),
        pytest.param(policy(max_batch_size=8, max_queue_delay_us=1000), 3, 0.0004, 0.0006,
                     id="waits-what-is-left"),
        pytest.param(policy(max_batch_size=8, max_queue_delay_us=1000), 3, 0.001, 0.0,
                     id="delay-passed"),
        pytest.param(policy(max_batch_size=8, max_queue_delay_us=1000), 3, 5.0, 0.0,
                     id="delay-long-passed"),
        pytest.param(policy(max_batch_size=8, max_queue_delay_us=1000), 8, 0.0, 0.0,
                     id="max-batch-size-reached"),
        pytest.param(policy(max_batch_size=8, max_queue_delay_us=1000), 20, 0.0, 0.0,
                     id="more-than-max-batch-size-queued"),
        pytest.param(policy(max_batch_size=8, max_queue_delay_us=1000,
                            preferred_batch_sizes=(4,)), 4, 0.0, 0.0, id="preferred-size-reached"),
        pytest.param(policy(max_batch_size=8, max_queue_delay_us=1000,
                            preferred_batch_sizes=(4,)), 3, 0.0, 0.001, id="below-preferred-size"),
        pytest.param(policy(max_batch_size=8, max_queue_delay_us=1000,
                            preferred_batch_sizes=(4,)), 5, 0.0, 0.0,
                     id="past-every-preferred-size"),
        pytest.param(policy(max_batch_size=16, max_queue_delay_us=1000,
                            preferred_batch_sizes=(2, 8)), 8, 0.0, 0.0,
                     id="largest-preferred-size-reached"),
        pytest.param(policy(max_batch_size=16, max_queue_delay_us=1000,
                            preferred_batch_sizes=(2, 8)), 2, 0.0, 0.0,
                     id="smallest-preferred-size-reached"),
        pytest.param(policy(max_batch_size=1, max_queue_delay_us=1000), 1, 0.0, 0.0,
                     id="max-batch-size-1"),
    ],
)
def test_should_wait(p: BatchPolicy, queued_rows: int, waited_s: float, expected: float) -> None:
    assert p.should_wait(queued_rows, T0, T0 + waited_s) == pytest.approx(expected, abs=1e-9)


@given(
    max_batch_size=st.integers(1, 256),
    delay_us=st.integers(0, 10_000_000),
    preferred=st.lists(st.integers(1, 256), max_size=4),
    queued_rows=st.integers(1, 512),
    waited_s=st.floats(0.0, 20.0),
)
def test_should_wait_never_exceeds_what_is_left_of_the_delay(
    max_batch_size: int, delay_us: int, preferred: list[int], queued_rows: int, waited_s: float
) -> None:
    pref = tuple(sorted({min(s, max_batch_size) for s in preferred}))
    p = policy(max_batch_size=max_batch_size, max_queue_delay_us=delay_us,
               preferred_batch_sizes=pref)
    wait = p.should_wait(queued_rows, T0, T0 + waited_s)
    left = max(0.0, delay_us * 1e-6 - waited_s)
    assert 0.0 <= wait <= left + 1e-9
    if queued_rows >= max_batch_size or queued_rows in pref or delay_us == 0:
        assert wait == 0.0


# ---- deadline ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("default_us", "request_us", "expected"),
    [
        pytest.param(0, None, 0.0, id="no-deadline"),
        pytest.param(0, 0, 0.0, id="request-0-means-none"),
        pytest.param(0, 500, T0 + 0.0005, id="request-sets-one"),
        pytest.param(2000, None, T0 + 0.002, id="model-default"),
        pytest.param(2000, 0, T0 + 0.002, id="request-0-keeps-default"),
        pytest.param(2000, 500, T0 + 0.0005, id="request-shortens"),
        pytest.param(2000, 9_000_000, T0 + 0.002, id="request-cannot-lengthen"),
    ],
)
def test_deadline(default_us: int, request_us: int | None, expected: float) -> None:
    p = policy(default_timeout_us=default_us)
    assert p.deadline(T0, request_us) == pytest.approx(expected, abs=1e-9)
