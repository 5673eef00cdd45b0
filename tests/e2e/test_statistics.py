"""Triton's statistics extension and the counters behind /metrics, read while real clients load a
real server: the invariants perf_analyzer relies on, perf_analyzer itself, counters that survive a
reload, and shadow figures whose windows add up."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.packaging.examples import publish_worse
from serving.registry.routing_state import RoutingState, Shadow, write_routing
from tests.conftest import ClientThreads, run_server, wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
STATS = "/v2/models/iris/versions/1/stats"


def _body(rows: int, width: int = 4) -> bytes:
    data = [[5.1 + 0.01 * i, 3.5, 1.4, 0.2][:width] for i in range(rows)]
    return orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                     "shape": [rows, width], "data": data}]})


class IrisLoad(ClientThreads):
    """Clients sending 1-3 row requests (and, every tenth, one the model must refuse); they
    tally what the server answered."""

    def __init__(self, url: str, clients: int = 6) -> None:
        super().__init__(url, clients)
        self.ok = self.ok_rows = self.refused = 0

    def run(self, index: int) -> None:
        rnd = random.Random(index)
        with httpx.Client(base_url=self.url, timeout=30) as c:
            n = 0
            while not self.stop.is_set():
                n += 1
                bad = n % 10 == 0
                rows = rnd.randint(1, 3)
                r = c.post("/v2/models/iris/versions/1/infer",
                           content=_body(rows, 3 if bad else 4))
                with self.lock:
                    if r.status_code == 200:
                        self.ok += 1
                        self.ok_rows += rows
                    elif r.status_code == 400:
                        self.refused += 1


def _check(stat: dict[str, Any]) -> None:
    """The invariants of one reading (or of the difference of two) that perf_analyzer needs."""
    inf = stat["inference_stats"]
    ok = inf["success"]["count"]
    # per request: every successful request counted once in each (perf_analyzer aborts when
    # the compute counts differ)
    assert inf["queue"]["count"] == ok, stat
    for phase in ("compute_input", "compute_infer", "compute_output"):
        assert inf[phase]["count"] == ok, stat
    # per execution: batch_stats per batch size, each with its own equal compute counts
    sizes = stat["batch_stats"]
    for b in sizes:
        n = b["compute_infer"]["count"]
        assert b["compute_input"]["count"] == n == b["compute_output"]["count"], b
    assert stat["execution_count"] == sum(b["compute_infer"]["count"] for b in sizes), stat
    assert stat["inference_count"] == sum(
        b["batch_size"] * b["compute_infer"]["count"] for b in sizes), stat


def _minus(a: Any, b: Any) -> Any:
    """a - b, field by field (what perf_analyzer computes between two readings)."""
    if isinstance(a, dict):
        return {k: _minus(v, b[k]) for k, v in a.items() if k not in ("name", "version")}
    if isinstance(a, list):  # batch_stats: by batch size
        before = {x["batch_size"]: x for x in b}
        zero = {"compute_input": {"count": 0, "ns": 0}, "compute_infer": {"count": 0, "ns": 0},
                "compute_output": {"count": 0, "ns": 0}}
        return [{**_minus({k: v for k, v in x.items() if k != "batch_size"},
                          before.get(x["batch_size"], zero)), "batch_size": x["batch_size"]}
                for x in a]
    return a - b


def _non_negative(delta: Any) -> None:
    if isinstance(delta, dict):
        for v in delta.values():
            _non_negative(v)
    elif isinstance(delta, list):
        for v in delta:
            _non_negative(v)
    else:
        assert delta >= 0


def test_statistics_hold_perf_analyzers_invariants_under_load(
    models_dir: Path, tmp_path: Path
) -> None:
    with run_server(models_dir, tmp_path) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        readings = []
        with IrisLoad(s.url) as load:
            wait_for(lambda: load.ok > 200)
            for _ in range(40):  # scrapes taken while requests are in flight
                (stat,) = c.get(STATS).json()["model_stats"]
                _check(stat)
                readings.append(stat)
        for earlier, later in pairwise(readings):
            delta = _minus(later, earlier)
            _non_negative(delta)
            _check(delta)
        assert readings[-1]["inference_stats"]["success"]["count"] > readings[0][
            "inference_stats"]["success"]["count"]

        # Once the clients stopped, the figures are exactly what they saw.
        def settled() -> bool:
            (stat,) = c.get(STATS).json()["model_stats"]
            return bool(stat["inference_stats"]["success"]["count"] == load.ok)

        wait_for(settled)
        (stat,) = c.get(STATS).json()["model_stats"]
        _check(stat)
        inf = stat["inference_stats"]
        assert inf["fail"]["count"] == load.refused > 0
        assert stat["inference_count"] == load.ok_rows
        assert 0 < stat["execution_count"] <= load.ok
        assert max(b["batch_size"] for b in stat["batch_stats"]) > 1  # batches formed
        assert inf["compute_infer"]["ns"] > 0 and inf["queue"]["ns"] > 0
        assert inf["success"]["ns"] >= inf["queue"]["ns"] + inf["compute_infer"]["ns"]
        assert stat["last_inference"] > 0


def _perf_analyzer() -> str:
    """Triton's perf_analyzer: $PERF_ANALYZER, else beside this Python (the tritonclient wheel)."""
    candidates = [os.environ.get("PERF_ANALYZER", ""),
                  str(Path(sys.executable).parent / "perf_analyzer"),
                  shutil.which("perf_analyzer") or ""]
    found = next((p for p in candidates if p and os.access(p, os.X_OK)), None)
    if found is None:
        pytest.fail("perf_analyzer not found: pip install -e '.[test]' (the tritonclient wheel) "
                    "or set PERF_ANALYZER (see benchmarks/perf_analyzer.sh)")
    return found


def run_perf_analyzer(address: str, **env: str) -> str:
    """benchmarks/perf_analyzer.sh on iris at `address`, briefly (4 clients, windows of 0.5 s),
    as a user runs it; its output once it exited 0 without perf_analyzer's own complaints."""
    full = {**os.environ, "PERF_ANALYZER": _perf_analyzer(), "MODELS": "iris",
            "CONCURRENCY": "4", "INTERVAL_MS": "500", "STABILITY": "500", "MAX_TRIALS": "10",
            "PA_CPUS": "", "VERBOSE": "1", **env}
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "perf_analyzer.sh"), address], env=full,
        capture_output=True, text=True, timeout=240,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "must be the same" not in out
    return out


def test_perf_analyzer_runs_clean_in_both_formats(models_dir: Path, tmp_path: Path) -> None:
    """perf_analyzer, a client nobody here wrote, measures iris with binary and with JSON
    tensors through benchmarks/perf_analyzer.sh, server-side statistics included. Stability
    is not what this checks (the machine may be busy): any three windows within 5x will do."""
    with run_server(models_dir, tmp_path) as s:
        out = run_perf_analyzer(s.url)
    assert out.count("Successful request count") >= 2, out  # server stats, both formats


def _metrics(c: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(c.get("/metrics").text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_batch_counters_survive_a_model_toml_reload(registry_copy: Path, tmp_path: Path) -> None:
    iris = frozenset({"model": "iris", "version": "1"}.items())
    names = ("serving_batches_total", "serving_batch_rows_total", "serving_queue_seconds_total",
             "serving_inference_seconds_total", "serving_batch_size_rows_count")
    with run_server(registry_copy, tmp_path, "--poll", "0.1") as s, \
            httpx.Client(base_url=s.url, timeout=30) as c, IrisLoad(s.url, clients=2) as load:
        readings = []

        def read() -> dict[str, float]:
            m = _metrics(c)
            readings.append({n: m.get((n, iris), 0.0) for n in names})
            return readings[-1]

        wait_for(lambda: read()["serving_batches_total"] > 50)
        before = readings[-1]["serving_batches_total"]
        toml = registry_copy / "iris" / "model.toml"
        toml.write_text(toml.read_text().replace("max_queue_delay_us = 0",
                                                 "max_queue_delay_us = 100"))

        def reloaded() -> bool:
            read()
            doc = c.get("/v2/models/iris/config").json()
            return bool(doc["dynamic_batching"]["max_queue_delay_microseconds"] == 100)

        wait_for(reloaded)
        served = load.ok
        wait_for(lambda: load.ok > served + 50)  # the new scheduler has run batches
        read()
    assert readings[-1]["serving_batches_total"] > before
    for earlier, later in pairwise(readings):
        for n in names:
            assert later[n] >= earlier[n], (n, earlier, later)


class PrimaryLoad(ClientThreads):
    def run(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self.stop.is_set():
                c.post("/v2/models/iris/infer", content=_body(1))


def test_a_shadow_window_never_compares_more_than_it_mirrored(
    registry_copy: Path, tmp_path: Path
) -> None:
    """A window opened while copies are in flight (as a rollout's shadow step is) still has
    compared + errors == mirrored once the copies are back."""
    toml = registry_copy / "iris" / "model.toml"
    toml.write_text(toml.read_text().replace("auto_promote = true", "auto_promote = false")
                    .replace('policy = "latest"', 'policy = "all"')
                    .replace("max_queue_delay_us = 0", "max_queue_delay_us = 20000"))
    worse = publish_worse(registry_copy, "iris")
    write_routing(registry_copy, "iris", RoutingState(primary=1, shadows=[Shadow(worse, 1.0)]))
    shadow = frozenset({"model": "iris", "version": str(worse)}.items())
    fields = ("serving_shadow_requests_total", "serving_shadow_compared_total",
              "serving_shadow_errors_total")

    def shadow_figures() -> dict[str, float]:
        m = _metrics(c)
        busy = m.get(("serving_queue_depth", shadow), 0) + m.get(
            ("serving_inflight_requests", shadow), 0)
        return {"busy": busy, **{n: m.get((n, shadow), 0.0) for n in fields}}

    with run_server(registry_copy, tmp_path) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        with PrimaryLoad(s.url, clients=8):
            wait_for(lambda: shadow_figures()["serving_shadow_compared_total"] > 100)
            readings = [shadow_figures()]
            wait_for(lambda: readings.append(shadow_figures()) or readings[-1]["busy"] > 0)
            start = readings[-1]  # a reading taken while copies were in flight

        def idle() -> bool:
            m = _metrics(c)
            return (m.get(("serving_queue_depth", shadow)) == 0
                    and m.get(("serving_inflight_requests", shadow)) == 0)

        wait_for(idle)
        end = shadow_figures()
    mirrored, compared, errors = (end[n] - start[n] for n in fields)
    assert compared > 0
    assert compared + errors == mirrored, (start, end)
