"""Canary and shadow routing and the rollout controller, through real servers."""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
import pytest

from serving.packaging.examples import publish_worse
from serving.packaging.publish import publish_version
from serving.registry.manifest import read_manifest
from serving.registry.routing_state import RoutingState, Shadow, read_routing, write_routing
from tests.conftest import ClientThreads, run_server, wait_for
from tests.e2e.models import iris_like, publish

pytestmark = pytest.mark.e2e

# for candidates identical to the primary on a machine shared with other tests
CALM = {"max_p99_ratio": 3.0, "min_latency_increase_ms": 5.0}
ROW = [6.0, 2.9, 4.5, 1.5]  # versicolor: the good iris says 1
BODY = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                 "data": ROW}]})


@pytest.fixture
def registry(registry_copy: Path) -> Path:
    """iris (pinned: new versions wait for a rollout) and diabetes."""
    for other in ("forest", "digits", "alltypes"):
        shutil.rmtree(registry_copy / other)
    toml = registry_copy / "iris" / "model.toml"
    toml.write_text(toml.read_text().replace("auto_promote = true", "auto_promote = false")
                    .replace('policy = "latest"', 'policy = "all"'))
    write_routing(registry_copy, "iris", RoutingState(primary=1))  # v1 serves until a rollout
    return registry_copy


def _copy_of_v1(registry: Path) -> int:
    m = read_manifest(registry / "iris" / "1" / "manifest.json")
    return publish_version(registry, replace(m, version=0),
                           (registry / "iris" / "1" / "model.onnx").read_bytes())


class Traffic(ClientThreads):
    """Clients with random routing keys; tallies (status, version, route) and labels."""

    def __init__(self, url: str, clients: int = 4) -> None:
        super().__init__(url, clients)
        self.seen: Counter[tuple[int, str, str]] = Counter()
        self.labels: Counter[tuple[str, int]] = Counter()

    def run(self, index: int) -> None:
        rnd = random.Random(index)
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self.stop.is_set():
                key = f"user-{rnd.randrange(10**9)}"
                r = c.post("/v2/models/iris/infer", content=BODY, headers={"x-routing-key": key})
                version = r.headers.get("x-model-version", "")
                with self.lock:
                    self.seen[(r.status_code, version, r.headers.get("x-route", ""))] += 1
                    if r.status_code == 200:
                        self.labels[(version, r.json()["outputs"][0]["data"][0])] += 1


def _route_of(c: httpx.Client, key: str) -> str:
    r = c.post("/v2/models/iris/infer", content=BODY, headers={"x-routing-key": key})
    assert r.status_code == 200
    assert r.json()["model_version"] == r.headers["x-model-version"]
    return r.headers["x-route"]


def test_canary_weights_split_traffic_and_keys_stay_put(registry: Path, tmp_path: Path) -> None:
    _copy_of_v1(registry)
    with run_server(registry, tmp_path, "--admin-open", "--poll", "0.1") as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        keys = [f"user-{i}" for i in range(1500)]
        write_routing(registry, "iris", RoutingState(primary=1, canary=2, canary_weight=20.0))
        wait_for(lambda: any(_route_of(c, k) == "canary" for k in keys[:50]))
        at20 = {k: _route_of(c, k) for k in keys}
        share = sum(r == "canary" for r in at20.values()) / len(keys)
        # binomial, n=1500, p=0.2: sd 1.03%; 4 sd either way
        assert 0.16 < share < 0.24, share
        assert all(_route_of(c, k) == at20[k] for k in keys[:200])  # the same key, same side

        write_routing(registry, "iris", RoutingState(primary=1, canary=2, canary_weight=50.0))
        wait_for(lambda: sum(_route_of(c, k) == "canary" for k in keys[:200]) > 70)
        at50 = {k: _route_of(c, k) for k in keys}
        share = sum(r == "canary" for r in at50.values()) / len(keys)
        assert 0.45 < share < 0.55, share
        # raising the weight only moves keys from primary to canary, never back
        assert all(at50[k] == "canary" for k in keys if at20[k] == "canary")
        # a request that names a version bypasses routing
        r = c.post("/v2/models/iris/versions/1/infer", content=BODY,
                   headers={"x-routing-key": next(k for k in keys if at50[k] == "canary")})
        assert r.headers["x-model-version"] == "1"


def test_shadow_never_changes_the_answer(registry: Path, tmp_path: Path) -> None:
    worse = publish_worse(registry, "iris")
    with run_server(registry, tmp_path, "--admin-open", "--poll", "0.1") as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        before = _median_latency_ms(c)
        write_routing(registry, "iris",
                      RoutingState(primary=1, shadows=[Shadow(worse, 1.0)]))
        wait_for(lambda: "serving_shadow_requests_total" in c.get("/metrics").text)
        with Traffic(s.url) as t2:
            wait_for(lambda: _sample(c.get("/metrics").text, "serving_shadow_requests_total",
                                     f'version="{worse}"', 0.0) > 100)
        with_shadow = _median_latency_ms(c)
        metrics = c.get("/metrics").text
    assert set(t2.seen) == {(200, "1", "primary")}  # only the primary ever answers
    assert set(t2.labels) == {("1", 1)}  # and its answer is the good model's
    mirrored = _sample(metrics, "serving_shadow_requests_total", f'version="{worse}"')
    disagree = _sample(metrics, "serving_shadow_disagreements_total", f'version="{worse}"')
    assert mirrored > 100 and disagree > 0.9 * _sample(
        metrics, "serving_shadow_label_rows_total", f'version="{worse}"')
    print(f"shadow: median latency of a lone request {before:.3f} ms without the shadow, "
          f"{with_shadow:.3f} ms with it")


def _median_latency_ms(c: httpx.Client, n: int = 300) -> float:
    """Median client-side latency of n sequential requests (a measured figure, not asserted)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert c.post("/v2/models/iris/infer", content=BODY).status_code == 200
        times.append(time.perf_counter() - t0)
    return sorted(times)[n // 2] * 1e3


def _sample(text: str, name: str, label: str, absent: float | None = None) -> float:
    """A sample's value; `absent` (or a failed assertion) when /metrics does not have it."""
    for line in text.splitlines():
        if line.startswith(name) and label in line:
            return float(line.rsplit(" ", 1)[1])
    assert absent is not None, f"{name}{{{label}}} not in /metrics"
    return absent


def _status(c: httpx.Client) -> dict:
    r = c.get("/v2/models/iris/rollout")
    assert r.status_code == 200, r.text
    return r.json()


def _start(c: httpx.Client, candidate: int, steps: str, **plan) -> dict:
    body = {"candidate": candidate, "steps": steps, "step_duration_s": plan.pop("duration", 1.0),
            "min_requests": plan.pop("min_requests", 40), "bake_s": plan.pop("bake_s", 1.0),
            **plan}
    r = c.post("/v2/models/iris/rollout", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_healthy_candidate_is_promoted_step_by_step(registry: Path, tmp_path: Path) -> None:
    candidate = _copy_of_v1(registry)
    with run_server(registry, tmp_path, "--admin-open", "--poll", "0.2") as s, \
            httpx.Client(base_url=s.url, timeout=10) as c, Traffic(s.url) as t:
        # identical models: only scheduler noise separates them, so latency gets a wide margin
        _start(c, candidate, "shadow,20,50", thresholds=CALM)
        try:
            wait_for(lambda: _status(c)["rollout"]["state"] == "promoted")
        except AssertionError:
            print(orjson.dumps(_status(c), option=orjson.OPT_INDENT_2).decode())
            raise
        doc = _status(c)
        wait_for(lambda: t.seen[(200, str(candidate), "primary")] > 20)
    history = [(h["kind"], h["weight"], h["decision"]) for h in doc["rollout"]["history"]
               if h["decision"] != "wait"]
    assert history == [("shadow", 0.0, "pass"), ("canary", 20.0, "pass"),
                       ("canary", 50.0, "pass"), ("bake", 100.0, "pass")]
    assert doc["primary"] == candidate
    assert read_routing(registry, "iris").primary == candidate  # persisted in the registry
    assert {k[0] for k in t.seen} == {200}
    assert t.seen[(200, str(candidate), "canary")] > 0


@pytest.mark.parametrize("kind", ["disagree", "errors", "slow"])
def test_bad_candidate_is_rolled_back(registry: Path, tmp_path: Path, kind: str) -> None:
    if kind == "disagree":
        candidate, steps, failed = publish_worse(registry, "iris"), "shadow,50", "disagreement"
    elif kind == "errors":
        candidate = publish(registry, "iris", iris_like("errors"))
        steps, failed = "30,60", "error_rate"
    else:
        candidate = publish(registry, "iris", iris_like("slow"))
        steps, failed = "30,60", "p99_latency"
    with run_server(registry, tmp_path, "--admin-open", "--poll", "0.2") as s, \
            httpx.Client(base_url=s.url, timeout=30) as c, Traffic(s.url) as t:
        _start(c, candidate, steps)
        wait_for(lambda: _status(c)["rollout"]["state"] != "running")
        doc = _status(c)
        rolled_back_at = sum(t.seen.values())
        wait_for(lambda: sum(t.seen.values()) > rolled_back_at + 100)
        after = Counter(k for k in t.seen)
    ro = doc["rollout"]
    assert ro["state"] == "rolled_back", ro
    assert failed in ro["reason"]
    last = ro["history"][-1]
    assert last["decision"] == "fail" and failed in last["reason"] and last["measured"]
    if kind == "disagree":  # both sides' latency is measured in the shadow step
        assert last["measured"]["primary_p99_ms"] is not None, last["measured"]
        assert last["measured"]["shadow_p99_ms"] is not None, last["measured"]
    assert doc["primary"] == 1 and doc["canary"] is None
    assert read_routing(registry, "iris").primary == 1
    print(f"{kind}: {ro['reason']}")
    assert after  # traffic kept flowing; after the rollback only v1 answers:
    assert t.seen[(200, "1", "primary")] > 0


def test_server_restarted_mid_rollout_resumes_it(registry: Path, tmp_path: Path) -> None:
    candidate = _copy_of_v1(registry)
    with run_server(registry, tmp_path, "--admin-open", "--poll", "0.2") as s, \
            httpx.Client(base_url=s.url, timeout=10) as c, Traffic(s.url):
        _start(c, candidate, "20,40", duration=2.0, thresholds=CALM)
        wait_for(lambda: _status(c)["rollout"]["step"] == 1)
    state = read_routing(registry, "iris")
    assert state.rollout.state == "running" and state.rollout.step == 1
    assert state.canary == candidate and state.canary_weight == 40.0
    with run_server(registry, tmp_path, "--admin-open", "--poll", "0.2") as s, \
            httpx.Client(base_url=s.url, timeout=10) as c, Traffic(s.url):
        assert _status(c)["canary_weight"] == 40.0  # routing as the registry says, at once
        try:
            wait_for(lambda: _status(c)["rollout"]["state"] == "promoted")
        except AssertionError:
            print(orjson.dumps(_status(c), option=orjson.OPT_INDENT_2).decode())
            raise
        assert _status(c)["primary"] == candidate


def test_manual_pause_resume_abort_and_token(registry: Path, tmp_path: Path) -> None:
    candidate = _copy_of_v1(registry)
    with run_server(registry, tmp_path, "--admin-token", "t0k") as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        plan = {"candidate": candidate, "steps": "10,20", "step_duration_s": 60}
        assert c.post("/v2/models/iris/rollout", json=plan).status_code == 401
        c.headers["Authorization"] = "Bearer t0k"
        assert c.post("/v2/models/iris/rollout", json=plan).status_code == 200
        r = c.post("/v2/models/iris/rollout", json=plan)
        assert r.status_code == 400 and "already has a rollout" in r.json()["error"]
        assert c.post("/v2/models/iris/rollout/pause").json()["rollout"]["state"] == "paused"
        assert c.post("/v2/models/iris/rollout/resume").json()["rollout"]["state"] == "running"
        doc = c.post("/v2/models/iris/rollout/abort").json()
        assert doc["rollout"]["state"] == "aborted" and doc["canary"] is None
        assert c.post("/v2/models/iris/rollout/resume").status_code == 400
        r = c.post("/v2/models/iris/rollout", json={"candidate": 99, "steps": "10"})
        assert r.status_code == 404
        r = c.post("/v2/models/iris/rollout", json={"candidate": candidate, "steps": "10,abc"})
        assert r.status_code == 400 and "canary percentage" in r.json()["error"]
