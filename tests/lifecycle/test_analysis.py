"""Rollout analysis on plain numbers: sample size decides nothing alone, real differences do."""

from __future__ import annotations

import pytest

from serving.lifecycle.analysis import (
    ShadowWindow,
    Thresholds,
    Window,
    error_rate_p_value,
    judge_bake,
    judge_canary,
    judge_shadow,
)
from serving.monitoring.counters import LATENCY_BUCKETS

T = Thresholds(min_requests=100)


def lat(ms: float, n: int) -> list[int]:
    """n requests all at about `ms` milliseconds, as histogram counts."""
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    i = next(i for i, b in enumerate(LATENCY_BUCKETS) if b * 1e3 >= ms)
    counts[i] = n
    return counts


def test_p_value_of_error_rates() -> None:
    assert error_rate_p_value(1, 1000, 1, 1000) == pytest.approx(0.5)
    assert error_rate_p_value(5, 1000, 60, 1000) < 1e-6
    assert error_rate_p_value(60, 1000, 5, 1000) > 0.99
    assert error_rate_p_value(0, 0, 5, 10) == 1.0


def test_a_handful_of_requests_never_decides() -> None:
    v = judge_canary(Window(1000, 0, lat(1, 1000)), Window(20, 20, lat(50, 20)), T)
    assert v.decision == "wait"


def test_error_rate_fails_only_when_significant_and_large() -> None:
    p = Window(2000, 4, lat(1, 2000))
    assert judge_canary(p, Window(200, 40, lat(1, 200)), T).decision == "fail"
    # 1 error in 100 vs 4 in 2000: higher, but not significant at this size
    assert judge_canary(p, Window(100, 1, lat(1, 100)), T).decision == "pass"


def test_latency_ratio_with_an_absolute_floor() -> None:
    p = Window(2000, 0, lat(2, 2000))
    v = judge_canary(p, Window(2000, 0, lat(10, 2000)), T)
    assert v.decision == "fail" and "p99_latency" in v.reason and "p99" in v.reason
    # 0.2 ms vs 0.1 ms is twice as slow but well under the 1 ms floor
    assert judge_canary(Window(2000, 0, lat(0.1, 2000)), Window(2000, 0, lat(0.25, 2000)),
                        T).decision == "pass"
    # small windows compare a lower quantile, and say which
    v = judge_canary(Window(300, 0, lat(2, 300)), Window(300, 0, lat(10, 300)), T)
    assert v.decision == "fail" and "p95" in v.reason


def test_quantile_interpolates_inside_a_bucket() -> None:
    w = Window(100, 0, lat(1, 100))  # all in the (0.5 ms, 1 ms] bucket
    assert 0.0005 < w.quantile(0.5) < 0.001
    assert w.quantile(0.99) > w.quantile(0.5)
    assert Window().quantile(0.99) is None


def test_shadow_disagreement_needs_evidence() -> None:
    assert judge_shadow(ShadowWindow(mirrored=50, label_rows=50, disagreements=50), T).decision \
        == "wait"
    fail = judge_shadow(ShadowWindow(compared=400, label_rows=400, disagreements=60,
                                     mirrored=400), T)
    assert fail.decision == "fail" and "disagreement" in fail.reason
    # 6% of 120 rows is over 5%, but not significantly
    ok = judge_shadow(ShadowWindow(compared=120, label_rows=120, disagreements=7,
                                   mirrored=120), T)
    assert ok.decision == "pass"
    errs = judge_shadow(ShadowWindow(mirrored=200, errors=20), T)
    assert errs.decision == "fail" and "shadow_errors" in errs.reason


def test_thresholds_from_json_refuses_unknown_keys() -> None:
    assert Thresholds.from_json({"max_p99_ratio": 2}).max_p99_ratio == 2.0
    with pytest.raises(ValueError, match="unknown thresholds"):
        Thresholds.from_json({"max_p99": 2})


def test_bake_compares_with_the_frozen_baseline_it_has() -> None:
    small = Window(50, 0, lat(2, 50))  # the last canary window's primary side: 50 requests
    # the candidate needs min_requests of its own...
    assert judge_bake(small, Window(60, 0, lat(2, 60)), T).decision == "wait"
    # ...the baseline cannot grow, so it is compared with what it has
    assert judge_bake(small, Window(1000, 0, lat(2, 1000)), T).decision == "pass"
    verdict = judge_bake(small, Window(1000, 300, lat(2, 1000)), T)
    assert verdict.decision == "fail" and "error_rate" in verdict.reason
    # no canary step, no baseline: nothing to compare, the request count decides
    verdict = judge_bake(Window(), Window(1000, 0, lat(2, 1000)), T)
    assert verdict.decision == "pass" and "no canary window" in verdict.reason


def test_accuracy_drop_waits_for_labels_then_fails_only_when_significant() -> None:
    t = Thresholds(min_requests=100, max_accuracy_drop=0.02, min_labels=200)
    ok = lat(1, 1000)
    few = judge_canary(Window(1000, 0, ok, 150, 140), Window(1000, 0, ok, 150, 90), t)
    assert few.decision == "wait" and "labelled" in few.reason
    worse = judge_canary(Window(1000, 0, ok, 500, 480), Window(1000, 0, ok, 500, 400), t)
    assert worse.decision == "fail" and worse.reason.startswith("accuracy")
    # a visible drop a few hundred labels cannot tell from noise, and one within the limit
    noisy = judge_canary(Window(1000, 0, ok, 200, 190), Window(1000, 0, ok, 200, 184), t)
    assert noisy.decision == "pass"
    within = judge_canary(Window(1000, 0, ok, 5000, 4750), Window(1000, 0, ok, 5000, 4700), t)
    assert within.decision == "pass"
    # off by default: labels are not waited for
    assert judge_canary(Window(1000, 0, ok), Window(1000, 0, ok), T).decision == "pass"
