"""Rollouts judged on a whole fleet: three `serving serve` replicas sharing a registry, Debian's
Prometheus scraping them every second, Debian's HAProxy in front; the clients talk to HAProxy
only. Run with -s for the figures the README quotes (time from a step's end to its decision,
requests judged against requests answered, Prometheus queries per decision)."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from serving.packaging.publish import publish_version
from serving.registry.lease import FileLeaseStore
from serving.registry.manifest import read_manifest
from serving.registry.routing_state import RoutingState, read_routing, write_routing
from tests.conftest import RunningServer, run_server, wait_for, wait_until_ready
from tests.e2e.fleet import (
    Process,
    Traffic,
    free_port,
    haproxy,
    permuted,
    prometheus,
    replica_args,
    wait_prometheus,
)
from tests.e2e.models import iris_like, publish

CALM = {"max_p99_ratio": 3.0, "min_latency_increase_ms": 5.0}  # identical twins, shared CPUs
WORSE, HEALTHY, BROKEN_ON_ONE, UNJUDGED, SURVIVOR = 2, 3, 4, 5, 6  # the versions published


@dataclass
class Fleet:
    registry: Path
    replicas: list[RunningServer]
    prometheus: Process
    prometheus_url: str
    url: str  # HAProxy


def _registries(models_dir: Path, tmp: Path) -> tuple[Path, Path]:
    """The shared registry (iris pinned at v1; v2 permutes its labels; v3-v6 are copies of v1),
    and a third replica's view of it: the same files (symlinks, routing state and lease
    included) except version 4, which on that replica is a model whose every run fails."""
    reg = tmp / "registry"
    shutil.copytree(models_dir / "iris", reg / "iris")
    toml = reg / "iris" / "model.toml"
    toml.write_text(toml.read_text().replace("auto_promote = true", "auto_promote = false")
                    .replace('policy = "latest"', 'policy = "all"'))
    write_routing(reg, "iris", RoutingState(primary=1))
    v1 = reg / "iris" / "1"
    onnx1 = (v1 / "model.onnx").read_bytes()
    assert publish(reg, "iris", permuted(onnx1)) == WORSE
    m = read_manifest(v1 / "manifest.json")
    for v in (HEALTHY, BROKEN_ON_ONE, UNJUDGED, SURVIVOR):
        assert publish_version(reg, replace(m, version=0), onnx1) == v
    other = tmp / "registry-r3"
    (other / "iris").mkdir(parents=True)
    (other / "_state").symlink_to(reg / "_state")
    for entry in ("model.toml", "1", "2", "3"):
        (other / "iris" / entry).symlink_to(reg / "iris" / entry)
    assert publish(other, "iris", iris_like("errors")) == BROKEN_ON_ONE
    for entry in ("5", "6"):
        (other / "iris" / entry).symlink_to(reg / "iris" / entry)
    return reg, other


@pytest.fixture(scope="module")
def fleet(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    reg, reg3 = _registries(models_dir, tmp)
    ports = [free_port() for _ in range(3)]
    prom, prom_url = prometheus(tmp, [f"127.0.0.1:{p}" for p in ports])
    lb, lb_url = haproxy(tmp, [f"127.0.0.1:{p}" for p in ports])
    with contextlib.ExitStack() as stack:
        prom.start()
        stack.callback(prom.stop)
        replicas = [stack.enter_context(run_server(
            r, tmp, *replica_args(p, prom_url))) for r, p in zip((reg, reg, reg3), ports,
                                                                 strict=True)]
        lb.start()
        stack.callback(lb.stop)
        wait_until_ready(lb_url)
        wait_prometheus(prom_url, 3)
        yield Fleet(reg, replicas, prom, prom_url, lb_url)
        for proc in (prom, lb):
            print(f"---- {proc.cmd[0]} log ----\n{proc.log()[-2000:]}")


def _status(c: httpx.Client) -> dict[str, Any] | None:
    r = c.get("/v2/models/iris/rollout")  # through HAProxy: any replica answers (forwarding)
    return r.json() if r.status_code == 200 else None


def _state(c: httpx.Client) -> str:
    doc = _status(c)
    return doc["rollout"]["state"] if doc else "unknown"


def _start(c: httpx.Client, candidate: int, steps: str, **plan: Any) -> dict[str, Any]:
    doc = _status(c)
    if doc and doc["rollout"]["state"] in ("running", "paused", "baking"):
        assert c.post("/v2/models/iris/rollout/abort").status_code == 200
    body = {"candidate": candidate, "steps": steps, "step_duration_s": plan.pop("duration", 3.0),
            "min_requests": plan.pop("min_requests", 60), "bake_s": plan.pop("bake_s", 2.0),
            "metrics": {"data_timeout_s": plan.pop("data_timeout_s", 30.0)}, **plan}
    r = c.post("/v2/models/iris/rollout", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _finished(c: httpx.Client, timeout: float = 90) -> dict[str, Any]:
    try:
        wait_for(lambda: _state(c) not in ("running", "baking", "unknown"), timeout)
    except AssertionError:
        print(orjson.dumps(_status(c), option=orjson.OPT_INDENT_2).decode())
        raise
    doc = _status(c)
    assert doc is not None
    return doc


def _judged(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [h for h in doc["rollout"]["history"] if h["decision"] in ("pass", "fail")]


def _report(what: str, h: dict[str, Any], t: Traffic) -> None:
    """The figures of one decision. HAProxy deals requests round-robin, so each replica
    answered about a third of what the clients got inside that replica's window."""
    m = h["measured"]
    reps = m["replicas"].values()
    judged = sum(r.get("primary", 0) + r.get("candidate", 0) for r in reps)
    answered = sum(t.between(*r["window"]) for r in reps) / len(reps)
    print(f"{what}: {h['kind']} {h['decision']} {m['decided_after_s']:.2f} s after the step's "
          f"end; judged {judged} requests, clients answered ~{answered:.0f} in the replicas' "
          f"windows; {m['prometheus_queries']} Prometheus queries, {m['prometheus_ms']} ms")


def test_worse_candidate_rolled_back_in_shadow_on_the_fleets_sum(fleet: Fleet) -> None:
    with httpx.Client(base_url=fleet.url, timeout=30) as c, Traffic(fleet.url) as t:
        _start(c, WORSE, "shadow")
        doc = _finished(c)
    ro = doc["rollout"]
    assert ro["state"] == "rolled_back" and "disagreement" in ro["reason"], ro
    [h] = _judged(doc)
    m = h["measured"]
    assert len(m["replicas"]) == 3 and all(r["primary"] > 0 and r["mirrored"] > 0
                                           for r in m["replicas"].values()), m
    judged = sum(r["primary"] for r in m["replicas"].values())
    # what the clients were answered in the window, within one scrape interval of each edge
    ws, we = m["window_start"], m["window_end"]
    assert t.between(ws + 1, we - 1) <= judged <= t.between(ws - 1, we + 1), (judged, m)
    assert m["mirrored"] == sum(r["mirrored"] for r in m["replicas"].values())
    assert m["shadow_p99_ms"] is not None and m["primary_p99_ms"] is not None
    assert not t.failed()
    _report("worse candidate", h, t)


def test_candidate_failing_on_one_replica_is_caught(fleet: Fleet) -> None:
    with httpx.Client(base_url=fleet.url, timeout=30) as c, Traffic(fleet.url) as t:
        _start(c, BROKEN_ON_ONE, "50")
        doc = _finished(c)
        rolled_back = time.time()
        t.wait_more(200)
    ro = doc["rollout"]
    assert ro["state"] == "rolled_back" and "error_rate" in ro["reason"], ro
    [h] = _judged(doc)
    m = h["measured"]
    assert all(r["candidate"] > 0 for r in m["replicas"].values()), m
    # one replica in three fails the candidate's requests
    assert 0.15 < m["candidate_error_rate"] < 0.6 and m["primary_error_rate"] == 0, m
    failed = t.failed()
    assert failed and {s for _, s, _ in failed} == {500}, failed[:5]
    assert not t.failed(since=rolled_back + 1.0)  # none once every replica routes back
    _report("candidate failing on one replica", h, t)


def test_healthy_candidate_promoted(fleet: Fleet) -> None:
    with httpx.Client(base_url=fleet.url, timeout=30) as c, Traffic(fleet.url) as t:
        _start(c, HEALTHY, "shadow,50", thresholds=CALM)
        doc = _finished(c)
    assert doc["rollout"]["state"] == "promoted", doc["rollout"]
    assert [(h["kind"], h["decision"]) for h in _judged(doc)] == [
        ("shadow", "pass"), ("canary", "pass"), ("bake", "pass")]
    assert doc["primary"] == HEALTHY
    assert not t.failed()
    for h in _judged(doc):
        _report("healthy candidate", h, t)


def test_prometheus_stopped_mid_step_waits_then_pauses(fleet: Fleet) -> None:
    primary = read_routing(fleet.registry, "iris").primary
    with httpx.Client(base_url=fleet.url, timeout=30) as c, Traffic(fleet.url) as t:
        _start(c, UNJUDGED, "50", duration=3.0, data_timeout_s=3.0, thresholds=CALM)
        fleet.prometheus.stop()
        try:
            wait_for(lambda: _state(c) != "running", 60)
            doc = _status(c)
        finally:
            fleet.prometheus.start()  # for the next test
    assert doc is not None
    ro = doc["rollout"]
    assert ro["state"] == "paused", ro
    assert "prometheus" in ro["reason"], ro["reason"]
    decisions = [h["decision"] for h in ro["history"]]
    assert "pass" not in decisions and decisions[-1] == "pause" and "wait" in decisions
    assert doc["primary"] == primary
    assert not t.failed()
    with httpx.Client(base_url=fleet.url, timeout=30) as c:
        assert c.post("/v2/models/iris/rollout/abort").status_code == 200
    wait_prometheus(fleet.prometheus_url, 3)


def test_killing_the_controller_moves_the_lease_and_the_rollout_resumes(fleet: Fleet) -> None:
    store = FileLeaseStore(fleet.registry)
    with httpx.Client(base_url=fleet.url, timeout=30) as c, Traffic(fleet.url) as t:
        started = _start(c, SURVIVOR, "40,60", duration=4.0, thresholds=CALM)
        first = store.read()[0]
        assert first is not None
        [holder] = [r for r in fleet.replicas if r.url == first.url]
        wait_for(lambda: time.time() > started["rollout"]["step_started_at"] + 1.5)
        holder.proc.kill()  # mid-step, without a goodbye: the lease must expire
        holder.proc.wait(10)
        wait_for(lambda: (lease := store.read()[0]) is not None and lease.holder != first.holder)
        doc = _finished(c, timeout=120)
        t.wait_more(100)
    second = store.read()[0]
    assert second is not None and second.url != first.url
    ro = doc["rollout"]
    assert ro["state"] == "promoted", (ro["reason"], ro["history"])
    step0 = [h for h in _judged(doc) if h["step"] == 0 and h["kind"] == "canary"]
    assert len(step0) == 1 and step0[0]["decision"] == "pass"
    m = step0[0]["measured"]
    # the same step, judged from where it started (not from the new holder's arrival)
    assert m["window_start"] <= started["rollout"]["step_started_at"]
    assert m.get("unscraped_replicas") == [first.url.removeprefix("http://")], m
    assert not t.failed(), t.failed()[:5]
    _report("after the controller was killed", step0[0], t)


def test_rollout_requests_reach_the_holder_with_the_callers_token(
        models_dir: Path, tmp_path: Path) -> None:
    reg, _ = _registries(models_dir, tmp_path)
    pa, pb = free_port(), free_port()
    common = ["--admin-token", "s3cret", "--rollout-metrics", "local", "--poll", "0.2"]
    auth = {"authorization": "Bearer s3cret"}
    with run_server(reg, tmp_path, "--port", str(pa), "--advertise-url",
                    f"http://127.0.0.1:{pa}", *common) as a, \
            run_server(reg, tmp_path, "--port", str(pb), "--advertise-url",
                       f"http://127.0.0.1:{pb}", *common) as b, \
            httpx.Client(base_url=b.url, timeout=30) as c:
        plan = {"candidate": HEALTHY, "steps": "50", "step_duration_s": 600}
        r = c.post("/v2/models/iris/rollout", json=plan)
        assert r.status_code == 401, r.text  # the holder's answer: the token is checked there
        r = c.post("/v2/models/iris/rollout", json=plan, headers=auth)
        assert r.status_code == 200, r.text
        assert r.headers["x-rollout-controller"] == a.url
        r = c.get("/v2/models/iris/rollout", headers=auth)
        assert r.status_code == 200 and r.json()["rollout"]["candidate"] == HEALTHY
        assert c.post("/v2/models/iris/rollout/abort", headers=auth).status_code == 200
        assert "took the rollout controller lease" in a.log()
        assert "took the rollout controller lease" not in b.log()
