"""Scale-out on one host: worker processes, merged metrics, readiness under saturation and drain."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest

from serving.registry.routing_state import RoutingState, write_routing
from tests.conftest import ClientThreads, run_server, wait_for
from tests.e2e.models import iris_like, publish

IRIS = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                    "data": [5.1, 3.5, 1.4, 0.2]}]}


@pytest.fixture()
def iris_registry(models_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    root.mkdir()
    shutil.copytree(models_dir / "iris", root / "iris")
    return root


def scrape(c: httpx.Client, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in c.get("/metrics").text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r"([^{ ]+)(?:\{(.*)\})? (\S+)$", line)
        assert m is not None, line
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def worker_pids(log: str) -> dict[int, int]:
    """Worker index -> pid of its latest incarnation, from the supervisor's log."""
    return {int(i): int(p) for i, p in re.findall(r"worker (\d+) started \(pid (\d+)\)", log)}


def fresh_connection_requests(url: str, n: int) -> list[int]:
    """n requests, each on a new connection (so the kernel spreads them over workers)."""
    codes = []
    for _ in range(n):
        with httpx.Client(base_url=url, timeout=10) as c:
            codes.append(c.post("/v2/models/iris/infer", json=IRIS).status_code)
    return codes


def test_two_workers_serve_merge_metrics_and_survive_a_crash(
    iris_registry: Path, tmp_path: Path
) -> None:
    with run_server(iris_registry, tmp_path, "--workers", "2") as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        pids = worker_pids(s.log())
        assert sorted(pids) == [0, 1] and len(set(pids.values())) == 2
        assert all(p != s.proc.pid for p in pids.values())

        assert fresh_connection_requests(s.url, 60) == [200] * 60
        # counters add up across workers (others' figures are up to a second old)
        wait_for(lambda: scrape(c, "serving_requests_total", model="iris",
                                outcome="success") == 60, timeout=10)
        assert scrape(c, "serving_request_duration_seconds_count", model="iris") == 60
        assert scrape(c, "serving_batch_rows_total", model="iris") == 60
        # both workers took traffic, and both are up
        assert scrape(c, "serving_worker_up") == 2
        per_worker = [scrape(c, "serving_worker_requests_total", worker=w) for w in "01"]
        assert sum(per_worker) == 60 and min(per_worker) > 0, per_worker
        # a gauge that is the same on every worker is not double counted
        assert scrape(c, "serving_model_state", model="iris", state="READY") == 1

        # a worker killed outright is restarted; its counters are not lost
        os.kill(pids[1], signal.SIGKILL)
        wait_for(lambda: worker_pids(s.log()).get(1, pids[1]) != pids[1], timeout=20)
        assert re.search(r"worker 1 \(pid \d+\) died with status -9; restarting", s.log())
        wait_for(lambda: all(code == 200 for code in fresh_connection_requests(s.url, 10)),
                 timeout=20)
        wait_for(lambda: scrape(c, "serving_requests_total", model="iris",
                                outcome="success") >= 70, timeout=10)
        assert s.stop() == 0
    assert "all workers stopped" in s.log()


def test_model_control_applies_to_every_worker(iris_registry: Path, tmp_path: Path) -> None:
    with run_server(iris_registry, tmp_path, "--workers", "2", "--admin-token", "t0k") as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        auth = {"authorization": "Bearer t0k"}
        assert c.post("/v2/repository/models/iris/unload").status_code == 401
        assert c.post("/v2/repository/models/iris/unload", headers=auth).status_code == 200
        # whichever worker answers, iris is gone
        codes = {c2 for c2 in fresh_connection_requests(s.url, 20)}
        assert 200 not in codes, codes
        assert c.post("/v2/repository/models/iris/load", headers=auth).status_code == 200
        assert fresh_connection_requests(s.url, 20) == [200] * 20
        bad = c.post("/v2/repository/models/nope/load", headers=auth)
        assert bad.status_code in (400, 404) and "error" in bad.json()


def test_rollout_requests_reach_worker_zero_and_every_worker_follows(
    iris_registry: Path, tmp_path: Path
) -> None:
    toml = iris_registry / "iris" / "model.toml"
    toml.write_text(toml.read_text().replace("auto_promote = true", "auto_promote = false")
                    .replace('policy = "latest"', 'policy = "all"'))
    write_routing(iris_registry, "iris", RoutingState(primary=1))
    publish(iris_registry, "iris", (iris_registry / "iris" / "1" / "model.onnx").read_bytes())
    # --poll 30: workers still follow worker 0's routing within a second
    with run_server(iris_registry, tmp_path, "--admin-open", "--workers", "2", "--poll", "30") as s:
        for _ in range(6):  # fresh connections land on both workers; only worker 0 has rollouts
            with httpx.Client(base_url=s.url, timeout=10) as c:
                assert c.get("/v2/models/iris/rollout/history").status_code == 200
        with httpx.Client(base_url=s.url, timeout=10) as c:
            r = c.post("/v2/models/iris/rollout",
                       json={"candidate": 2, "steps": "50", "step_duration_s": 600})
            assert r.status_code == 200, r.text
            again = c.post("/v2/models/iris/rollout", json={"candidate": 2, "steps": "50"})
            assert again.status_code == 400 and "already" in again.json()["error"]

        def canary_share() -> float:
            routes = []
            for i in range(200):
                with httpx.Client(base_url=s.url, timeout=10) as c:
                    r = c.post("/v2/models/iris/infer", json=IRIS,
                               headers={"x-routing-key": f"user-{i}"})
                    assert r.status_code == 200
                    routes.append(r.headers["x-route"])
            return routes.count("canary") / len(routes)

        # both workers route half the keys to the canary (worker 0 alone would make it 1/4)
        wait_for(lambda: canary_share() > 0.38, timeout=20)


class Load(ClientThreads):
    """Clients that send iris requests until stopped, counting outcomes."""

    def __init__(self, url: str, clients: int = 4, path: str = "/v2/models/iris/infer") -> None:
        super().__init__(url, clients)
        self.path = path
        self.ok = 0
        self.failures: list[str] = []

    def run(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self.stop.is_set():
                try:
                    r = c.post(self.path, json=IRIS)
                    failed = None if r.status_code == 200 else f"{r.status_code} {r.text}"
                except httpx.HTTPError as exc:
                    failed = repr(exc)
                with self.lock:
                    if failed is None:
                        self.ok += 1
                    else:
                        self.failures.append(failed)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_unreadies_at_once_serves_through_the_grace_and_exits_0(
    iris_registry: Path, tmp_path: Path, workers: str
) -> None:
    """A rolling update as Kubernetes does it: SIGTERM, readiness fails, the load balancer stops
    sending a moment later, and nothing routed here fails."""
    with run_server(iris_registry, tmp_path, "--workers", workers,
                    env={"SERVING_DRAIN_GRACE": "3"}) as s:
        load = Load(s.url)
        with load:
            wait_for(lambda: load.ok > 50)
            signalled = time.monotonic()
            s.proc.send_signal(signal.SIGTERM)
            with httpx.Client(base_url=s.url, timeout=5) as c:
                def unready() -> bool:
                    r = c.get("/v2/health/ready")
                    return r.status_code == 503 and "draining" in r.json()["reason"]

                wait_for(unready, timeout=2)
                assert c.get("/v2/health/live").status_code == 200
            ok_at_unready = load.ok
            time.sleep(1.0)  # the load balancer's reaction time, inside the 3 s grace
            assert s.proc.poll() is None
        print(f"\ndrain with {workers} worker(s): {load.ok} requests answered, "
              f"{load.ok - ok_at_unready} after readiness went false, "
              f"{len(load.failures)} failed")
        assert load.ok > ok_at_unready  # served after readiness went false
        assert load.failures == []
        assert s.proc.wait(30) == 0
        assert time.monotonic() - signalled >= 3.0


def test_readiness_turns_false_while_saturated_and_recovers(
    iris_registry: Path, tmp_path: Path
) -> None:
    publish(iris_registry, "slow", iris_like("slow"),
            "[batching]\nmax_batch_size = 1\nmax_queue_size = 8\n")
    with run_server(iris_registry, tmp_path, "--saturation-fraction", "0.5",
                    "--saturation-seconds", "0.3") as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        assert c.get("/v2/health/ready").status_code == 200
        load = Load(s.url, clients=12, path="/v2/models/slow/infer")
        with load:
            def unready() -> bool:
                r = c.get("/v2/health/ready")
                return r.status_code == 503 and "saturated" in r.json()["reason"]

            wait_for(unready, timeout=20)
            assert "model slow:1" in c.get("/v2/health/ready").json()["reason"]
            assert c.get("/v2/health/live").status_code == 200
            # other models still answer: saturation is advice to the balancer, not a refusal
            assert c.post("/v2/models/iris/infer", json=IRIS).status_code == 200
        wait_for(lambda: c.get("/v2/health/ready").status_code == 200, timeout=20)
        assert load.ok > 0
        assert "not ready: saturated" in s.log() and "ready again" in s.log()


def test_workers_refuse_a_port_another_server_listens_on(
    iris_registry: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    with run_server(iris_registry, tmp_path, "--workers", "2") as s:
        r = subprocess.run([sys.executable, "-m", "serving", "serve", "--registry",
                            str(iris_registry), "--host", "127.0.0.1", "--port", str(s.port),
                            "--workers", "2", "--grpc-port", "0"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1 and "cannot serve on 127.0.0.1" in r.stderr, r.stderr
        with httpx.Client(base_url=s.url, timeout=10) as c:  # the first server is unharmed
            assert c.post("/v2/models/iris/infer", json=IRIS).status_code == 200


def test_workers_setting_is_validated(iris_registry: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "serving", "serve", "--registry",
                        str(iris_registry), "--workers", "zero"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "workers must be a positive integer or 'auto'" in r.stderr
