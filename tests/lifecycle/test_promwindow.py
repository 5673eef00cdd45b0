"""A step's window from Prometheus samples: queries, alignment on scrapes, counter increases."""

from __future__ import annotations

import pytest

from serving.lifecycle.promwindow import (
    CORRECT,
    LABELLED,
    LATENCY,
    REQUESTS,
    SHADOW_FIELDS,
    Series,
    increase,
    parse_matrix,
    range_query,
    replicas,
    scrape_interval,
    selector,
    sum_window,
)
from serving.monitoring.counters import LATENCY_BUCKETS


def test_selector_quotes_values_and_names_the_series() -> None:
    assert selector({"model": 'a"b', "job": "serving"}, ["x_total", "y_bucket"]) == (
        '{__name__=~"x_total|y_bucket",job="serving",model="a\\"b"}')
    assert selector({"job": "serving"}) == '{job="serving"}'


@pytest.mark.parametrize(("start", "at", "margin", "expected"), [
    (100.0, 160.0, 30.0, "[90s]"), (100.0, 100.2, 0.0, "[1s]"), (100.0, 130.5, 2.0, "[33s]"),
])
def test_range_query_reaches_back_past_the_start(start: float, at: float, margin: float,
                                                 expected: str) -> None:
    assert range_query("{a}", start, at, margin) == "{a}" + expected


@pytest.mark.parametrize(("samples", "expected"), [
    pytest.param([(9.0, 5), (10.0, 7), (11.0, 9), (13.0, 20), (14.0, 25)], 13, id="aligned"),
    pytest.param([(11.0, 2), (12.0, 4)], 4, id="born-in-the-window"),
    pytest.param([(10.0, 50), (11.0, 60), (12.0, 3), (13.0, 8)], 18, id="restart"),
    pytest.param([(5.0, 1), (6.0, 1)], 0, id="nothing-after-the-start"),
    pytest.param([(10.0, 5), (12.5, 9), (13.5, 11)], 4, id="a-later-scrape-not-counted"),
])
def test_increase_from_the_scrape_before_to_the_scrape_after(samples: list[tuple[float, float]],
                                                             expected: float) -> None:
    # window aligned on scrapes at 10 (before the start) and 13 (after the end)
    assert increase(samples, 10.0, 13.0) == expected


def _up(instance: str, samples: list[tuple[float, float]]) -> Series:
    return Series({"__name__": "up", "instance": instance, "job": "serving"}, samples)


def test_replicas_align_on_their_own_scrapes_and_report_the_lost() -> None:
    up = [
        _up("a:1", [(9.5, 1), (10.5, 1), (11.5, 1), (12.5, 1), (13.5, 1)]),
        _up("b:1", [(9.9, 1), (10.9, 1), (11.9, 0), (12.9, 0)]),  # dies
        _up("c:1", [(9.2, 1), (10.2, 1), (11.2, 1), (12.2, 1)]),  # last scrape still to come
    ]
    a, b, c = replicas(up, start=10.0, end=13.0, now=13.6, grace_s=4.0)
    assert (a.instance, a.start, a.end, a.up, a.scrapes) == ("a:1", 9.5, 13.5, True, 3)
    assert (b.start, b.end, b.up, b.gone) == (9.9, None, False, True)
    assert (c.start, c.end, c.up, c.gone) == (9.2, None, True, False)
    # c is never scraped again (it left service discovery): down once past the grace
    assert replicas(up, 10.0, 13.0, now=17.0, grace_s=4.0)[2].gone
    assert scrape_interval(up) == pytest.approx(1.0)


def _series(name: str, instance: str, samples: list[tuple[float, float]], **labels: str,
            ) -> Series:
    return Series({"__name__": name, "instance": instance, "model": "m", **labels}, samples)


def test_windows_sum_every_replica_and_count_each_side_per_replica() -> None:
    up = [_up("a:1", [(9.5, 1), (13.5, 1)]), _up("b:1", [(9.9, 1), (13.9, 1)])]
    reps = replicas(up, 10.0, 13.0, 14.0, 4.0)
    data = [
        _series(REQUESTS, "a:1", [(9.5, 100), (13.5, 150)], version="1", route="primary",
                outcome="success"),
        _series(REQUESTS, "b:1", [(9.9, 10), (13.9, 40)], version="1", route="primary",
                outcome="success"),
        _series(REQUESTS, "b:1", [(9.9, 0), (13.9, 5)], version="2", route="canary",
                outcome="model_error"),
        _series(REQUESTS, "a:1", [(13.5, 20)], version="2", route="canary", outcome="success"),
        _series(LATENCY, "a:1", [(9.5, 0), (13.5, 10)], version="2", route="canary", le="0.001"),
        _series(LATENCY, "a:1", [(9.5, 0), (13.5, 20)], version="2", route="canary", le="+Inf"),
        _series(SHADOW_FIELDS["mirrored"], "a:1", [(9.5, 1), (13.5, 4)], version="2"),
        _series(REQUESTS, "a:1", [(14.5, 999)], version="1", route="primary",
                outcome="success"),  # after a's window: not counted
    ]
    sides = {"primary": ("1", "primary"), "candidate": ("2", "canary"),
             "mirrored": ("2", "shadow")}
    totals = sum_window(data, reps, sides)
    primary, canary = totals.window("1", "primary"), totals.window("2", "canary")
    assert (primary.requests, primary.errors) == (80, 0)
    assert (canary.requests, canary.errors) == (25, 5)
    assert len(canary.latency) == len(LATENCY_BUCKETS) + 1
    assert canary.latency[LATENCY_BUCKETS.index(0.001)] == 10 and canary.latency[-1] == 10
    assert totals.shadow("2").mirrored == 3
    assert reps[0].counts == {"primary": 50, "candidate": 20, "mirrored": 3}
    assert reps[1].counts == {"primary": 30, "candidate": 5}


def test_live_accuracy_is_summed_over_replicas_like_requests() -> None:
    """Feedback's labelled and correct rows (payload feedback, by version and route) fill the
    window's live-accuracy counts, so `max_accuracy_drop` is judged on the fleet's labels."""
    up = [_up("a:1", [(9.5, 1), (13.5, 1)]), _up("b:1", [(9.9, 1), (13.9, 1)])]
    reps = replicas(up, 10.0, 13.0, 14.0, 4.0)
    data = [
        _series(LABELLED, "a:1", [(9.5, 10), (13.5, 70)], version="2", route="canary"),
        _series(LABELLED, "b:1", [(9.9, 0), (13.9, 40)], version="2", route="canary"),
        _series(CORRECT, "a:1", [(9.5, 5), (13.5, 50)], version="2", route="canary"),
        _series(CORRECT, "b:1", [(9.9, 0), (13.9, 30)], version="2", route="canary"),
        _series(LABELLED, "a:1", [(9.5, 0), (13.5, 99)], version="1", route="primary"),
    ]
    totals = sum_window(data, reps, {"candidate": ("2", "canary")})
    canary = totals.window("2", "canary")
    assert (canary.labelled, canary.correct) == (100, 75)
    assert totals.window("1", "primary").labelled == 99


@pytest.mark.parametrize("doc", [
    {"status": "error", "error": "bad query"},
    {"status": "success", "data": {"resultType": "vector", "result": []}},
    [],
])
def test_anything_but_a_matrix_is_refused(doc: object) -> None:
    with pytest.raises(ValueError):
        parse_matrix(doc)


def test_a_matrix_is_read() -> None:
    doc = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"__name__": "up", "instance": "a:1"}, "values": [[1.5, "1"], [2.5, "0"]]}]}}
    [s] = parse_matrix(doc)
    assert s.labels["instance"] == "a:1" and s.samples == [(1.5, 1.0), (2.5, 0.0)]
