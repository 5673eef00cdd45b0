"""The Prometheus metric source and the controller on it, with a fake Prometheus (canned samples
answered the way the query API answers them) and a fake clock."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from serving.client import Unreachable
from serving.errors import BadRequest
from serving.lifecycle.plan import Plan
from serving.lifecycle.prometheus import (
    FleetMetrics,
    FleetSources,
    FleetStep,
    Missing,
    PrometheusSource,
    StepWindow,
)
from serving.lifecycle.promwindow import REQUESTS
from serving.lifecycle.rollout import RolloutController
from serving.registry.rollout_state import RolloutState
from tests.lifecycle.test_rollout import MODEL, Clock, FakeHost, FakeSource, FakeVersion

T0 = 1_767_225_600.0
SETTINGS = FleetMetrics("prometheus", "http://prometheus:9090", data_timeout_s=5.0)


class FakePrometheus:
    """Scrapes every second from T0 - 10 until `scraped_until`; `down` refuses queries."""

    def __init__(self, instances: tuple[str, ...] = ("a:1", "b:1")) -> None:
        self.instances = instances
        self.scraped_until = T0
        self.down = False
        self.rate = {("1", "primary"): 10, ("2", "canary"): 5}  # requests per second each
        self.queries: list[str] = []

    def _matrix(self, series: list[tuple[dict[str, str], list[tuple[float, float]]]]) -> Any:
        result = [{"metric": m, "values": [[t, str(v)] for t, v in s]} for m, s in series]
        return {"status": "success", "data": {"resultType": "matrix", "result": result}}

    def fetch(self, query: str, at: float) -> Any:
        self.queries.append(query)
        if self.down:
            raise Unreachable("cannot reach http://prometheus:9090: connection refused")
        times = [T0 - 10 + i for i in range(int(min(at, self.scraped_until) - T0 + 11))]
        if query.startswith('{__name__=~"up"'):
            return self._matrix([({"__name__": "up", "instance": i}, [(t, 1) for t in times])
                                 for i in self.instances])
        return self._matrix([
            ({"__name__": REQUESTS, "instance": i, "version": v, "route": r,
              "outcome": "success", "model": MODEL}, [(t, n * (t - T0 + 10)) for t in times])
            for i in self.instances for (v, r), n in self.rate.items()])


def _window(end: float = T0 + 5) -> StepWindow:
    return StepWindow(MODEL, 1, 2, T0, end, baking=False)


def test_the_step_waits_for_its_last_scrape_then_sums_the_replicas() -> None:
    prom = FakePrometheus()
    src = PrometheusSource(SETTINGS, fetch=prom.fetch)
    assert asyncio.run(src.step(_window(), now=T0 + 4)) is None  # not over yet
    assert not prom.queries
    prom.scraped_until = T0 + 4  # over, but the scrapes after its end are still to come
    assert asyncio.run(src.step(_window(), now=T0 + 5.2)) is None
    prom.scraped_until = T0 + 5
    got = asyncio.run(src.step(_window(), now=T0 + 5.5))
    assert isinstance(got, FleetStep)
    # from the scrape at T0 to the one at T0 + 5: 5 s at 10/s and 5/s on each of two replicas
    assert (got.primary.requests, got.canary.requests) == (100, 50)
    m = got.measured
    window = [T0, T0 + 5]
    assert m["replicas"] == {"a:1": {"primary": 50, "candidate": 25, "window": window},
                             "b:1": {"primary": 50, "candidate": 25, "window": window}}
    assert (m["window_start"], m["window_end"], m["decided_after_s"]) == (T0, T0 + 5, 0.5)
    assert m["prometheus_queries"] == 3 and "unscraped_replicas" not in m  # the wait's too
    assert all('job="serving"' in q for q in prom.queries)


def test_missing_numbers_wait_then_turn_late() -> None:
    prom = FakePrometheus()
    prom.down = True
    src = PrometheusSource(SETTINGS, fetch=prom.fetch)
    got = asyncio.run(src.step(_window(), now=T0 + 6))
    assert isinstance(got, Missing) and not got.late and "connection refused" in got.reason
    got = asyncio.run(src.step(_window(), now=T0 + 10.5))
    assert isinstance(got, Missing) and got.late


def test_too_few_samples_is_missing_data() -> None:
    prom = FakePrometheus()
    prom.scraped_until = T0 + 30
    src = PrometheusSource(SETTINGS, fetch=lambda q, at: _gappy(prom.fetch(q, at)))
    got = asyncio.run(src.step(_window(T0 + 20), now=T0 + 21))
    assert isinstance(got, Missing) and "too few samples" in got.reason


def _gappy(doc: Any) -> Any:
    """Prometheus was away for most of the step: keep the samples before T0 + 1 and after
    T0 + 19 only."""
    for item in doc["data"]["result"]:
        item["values"] = [v for v in item["values"] if not T0 + 1 < v[0] < T0 + 19]
    return doc


@pytest.mark.parametrize(("obj", "message"), [
    ({"source": "graphite"}, "'local' or 'prometheus'"),
    ({"source": "prometheus"}, "prometheus_url"),
    ({"colour": "red"}, "unknown"),
    ({"data_timeout_s": 0}, "data_timeout_s"),
    ({"data_timeout_s": "soon"}, "wrong type"),
])
def test_metric_settings_are_checked(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FleetMetrics.from_json(obj)


def _controller(tmp_path: Path, prom: FakePrometheus, clock: Clock) -> RolloutController:
    host = FakeHost(tmp_path, {v: FakeVersion(v) for v in (1, 2, 3)})
    sources = FleetSources(lambda s: PrometheusSource(s, fetch=prom.fetch))
    return RolloutController(host, FakeSource(), clock=clock, fleet=SETTINGS, sources=sources)


def _plan(**metrics: Any) -> Plan:
    return Plan.from_json({"candidate": 2, "steps": "50,60", "step_duration_s": 5,
                           "min_requests": 10, "bake_s": 0, "metrics": metrics})


def test_the_controller_judges_the_fleet_and_pauses_without_numbers(tmp_path: Path) -> None:
    prom, clock = FakePrometheus(), Clock()
    clock.now = T0
    ctl = _controller(tmp_path, prom, clock)
    asyncio.run(ctl.start(MODEL, _plan()))
    prom.scraped_until = clock.now = T0 + 5.5
    asyncio.run(ctl.tick())
    ro = ctl.status(MODEL).rollout
    assert (ro.step, ro.history[-1].decision) == (1, "pass")
    assert ro.history[-1].measured["primary_requests"] == 100  # 2 replicas, 5 s at 10/s
    prom.down = True  # step 1, from T0 + 5.5 until T0 + 10.5
    clock.now = T0 + 11
    asyncio.run(ctl.tick())
    asyncio.run(ctl.tick())  # the same reason is recorded once
    ro = ctl.status(MODEL).rollout
    assert ro.state is RolloutState.RUNNING and ro.waiting
    assert [h.decision for h in ro.history].count("wait") == 1
    assert "connection refused" in ro.history[-1].reason
    clock.now = T0 + 16  # past data_timeout_s after the step's end
    asyncio.run(ctl.tick())
    ro = ctl.status(MODEL).rollout
    assert ro.state is RolloutState.PAUSED and "connection refused" in ro.reason
    assert ro.history[-1].decision == "pause"
    clock.now = T0 + 60
    asyncio.run(ctl.tick())  # paused stays paused: nothing promotes it
    assert ctl.status(MODEL).rollout.state is RolloutState.PAUSED
    assert ctl.status(MODEL).primary == 1


def test_a_plan_names_its_metric_source_and_a_bad_one_is_a_400(tmp_path: Path) -> None:
    clock = Clock()
    ctl = _controller(tmp_path, FakePrometheus(), clock)
    with pytest.raises(BadRequest, match="metrics"):
        asyncio.run(ctl.start(MODEL, _plan(source="prometheus", prometheus_url="")))
    asyncio.run(ctl.start(MODEL, _plan(job="fleet")))
    assert ctl.status(MODEL).rollout.metrics == {**SETTINGS.to_json(), "job": "fleet"}


def test_the_plan_overrides_model_toml_which_overrides_the_server() -> None:
    from serving.lifecycle.prometheus import rollout_metrics
    from serving.model_config import ModelConfig

    toml = ModelConfig.from_toml({"routing": {"rollout_metrics": "prometheus",
                                              "prometheus_url": "http://model:9090"}})
    server = FleetMetrics()  # local
    assert rollout_metrics(None, ModelConfig(), server) == server
    assert rollout_metrics(None, toml, server) == FleetMetrics("prometheus", "http://model:9090")
    assert rollout_metrics({"source": "local"}, toml, server).source == "local"
    with pytest.raises(BadRequest, match="prometheus_url"):
        rollout_metrics({"source": "prometheus"}, ModelConfig(), server)
    with pytest.raises(ValueError, match="routing"):
        ModelConfig.from_toml({"routing": {"rollout_metric": "prometheus"}})


def test_a_bake_without_numbers_keeps_waiting(tmp_path: Path) -> None:
    """Pausing a bake would make `resume` rerun a canary step against a primary with no
    traffic: the bake waits for its numbers instead (and never finishes without them)."""
    prom, clock = FakePrometheus(), Clock()
    clock.now = T0
    ctl = _controller(tmp_path, prom, clock)
    asyncio.run(ctl.start(MODEL, Plan.from_json({
        "candidate": 2, "steps": "50", "step_duration_s": 5, "min_requests": 10, "bake_s": 5})))
    prom.scraped_until = clock.now = T0 + 5.5
    asyncio.run(ctl.tick())
    assert ctl.status(MODEL).rollout.state is RolloutState.BAKING
    prom.down = True
    clock.now = T0 + 60
    asyncio.run(ctl.tick())
    ro = ctl.status(MODEL).rollout
    assert ro.state is RolloutState.BAKING and ro.waiting
    assert (ro.history[-1].kind, ro.history[-1].decision) == ("bake", "wait")
