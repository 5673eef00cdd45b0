"""The /metrics merge across worker processes, on plain snapshots and temporary files (no
server): counters and histograms add up (dead workers included), gauges come from live workers
and add up or take the largest value by what they mean."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from serving.monitoring.multiprocess import MultiProcessView, merge, snapshot, write_snapshot

DEAD_PID = 2**22 + 12345  # above Linux's pid_max default: never a live process


def _snap(worker: int, *families: dict[str, Any], pid: int = 0) -> dict[str, Any]:
    return {"pid": pid, "worker": worker, "families": list(families)}


def _requests(n: float, version: str = "1") -> dict[str, Any]:
    labels = {"model": "iris", "version": version, "route": "primary", "outcome": "success"}
    return {"name": "serving_requests", "doc": "Inference requests by outcome", "type": "counter",
            "samples": [["serving_requests_total", labels, n]]}


def _gauge(name: str, value: float) -> dict[str, Any]:
    return {"name": name, "doc": name, "type": "gauge",
            "samples": [[name, {"model": "iris", "version": "1"}, value]]}


def _values(metrics: list[Any]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value for m in metrics for s in m.samples}


IRIS = frozenset({"model": "iris", "version": "1"}.items())
IRIS_OK = frozenset({"model": "iris", "version": "1", "route": "primary",
                     "outcome": "success"}.items())


def test_counters_add_up_across_live_and_dead_workers() -> None:
    merged = _values(merge([
        (True, _snap(0, _requests(10))),
        (True, _snap(1, _requests(5))),
        (False, _snap(1, _requests(7))),  # worker 1's previous incarnation
    ]))
    assert merged[("serving_requests_total", IRIS_OK)] == 22
    # per worker: incarnations of one worker add up; only live ones are up
    assert merged[("serving_worker_requests_total", frozenset({("worker", "0")}))] == 10
    assert merged[("serving_worker_requests_total", frozenset({("worker", "1")}))] == 12
    assert merged[("serving_worker_up", frozenset({("worker", "0")}))] == 1
    assert merged[("serving_worker_up", frozenset({("worker", "1")}))] == 1


def test_gauges_come_from_live_workers_and_combine_by_meaning() -> None:
    merged = _values(merge([
        (True, _snap(0, _gauge("serving_queue_depth", 3), _gauge("serving_model_state", 0))),
        (True, _snap(1, _gauge("serving_queue_depth", 4), _gauge("serving_model_state", 1))),
        (False, _snap(2, _gauge("serving_queue_depth", 100), _gauge("serving_model_state", 9))),
    ]))
    assert merged[("serving_queue_depth", IRIS)] == 7  # summed gauge: depths add up
    assert merged[("serving_model_state", IRIS)] == 1  # any other gauge: the largest
    assert ("serving_worker_up", frozenset({("worker", "2")})) not in merged


def test_series_only_one_worker_has_are_kept() -> None:
    merged = _values(merge([(True, _snap(0, _requests(1, "1"))),
                            (True, _snap(1, _requests(2, "2")))]))
    assert merged[("serving_requests_total", IRIS_OK)] == 1
    v2 = frozenset({"model": "iris", "version": "2", "route": "primary",
                    "outcome": "success"}.items())
    assert merged[("serving_requests_total", v2)] == 2


def _registry(requests: float, depth: float, latencies: list[float]) -> CollectorRegistry:
    reg = CollectorRegistry()
    c = Counter("serving_requests", "Inference requests by outcome",
                ["model", "version", "route", "outcome"], registry=reg)
    c.labels("iris", "1", "primary", "success").inc(requests)
    Gauge("serving_queue_depth", "Requests queued", ["model", "version"],
          registry=reg).labels("iris", "1").set(depth)
    h = Histogram("serving_request_duration_seconds", "latency", ["model", "version", "route"],
                  buckets=(0.01, 0.1), registry=reg)
    for x in latencies:
        h.labels("iris", "1", "primary").observe(x)
    return reg


def test_histograms_add_bucket_by_bucket() -> None:
    a = snapshot(_registry(1, 0, [0.005, 0.05]), 0)
    b = snapshot(_registry(1, 0, [0.5]), 1)
    merged = _values(merge([(True, a), (False, b)]))
    labels = {"model": "iris", "version": "1", "route": "primary"}

    def bucket(le: str) -> float:
        return merged[("serving_request_duration_seconds_bucket",
                       frozenset({**labels, "le": le}.items()))]

    assert (bucket("0.01"), bucket("0.1"), bucket("+Inf")) == (1, 2, 3)
    count = ("serving_request_duration_seconds_count", frozenset(labels.items()))
    assert merged[count] == 3


def test_a_scrape_merges_the_live_registry_with_sibling_files(tmp_path: Path) -> None:
    live = _registry(10, 2, [])
    # A sibling that is alive (this test's own pid stands in for it), one that died, this
    # worker's own file (skipped: its live registry counts), and a torn file (ignored).
    sibling = snapshot(_registry(5, 3, []), 1)
    (tmp_path / "1-1.json").write_bytes(orjson.dumps(sibling))
    dead = {**snapshot(_registry(7, 50, []), 2), "pid": DEAD_PID}
    (tmp_path / f"2-{DEAD_PID}.json").write_bytes(orjson.dumps(dead))
    write_snapshot(_registry(1000, 1000, []), tmp_path, 0)  # own file: <worker>-<pid>.json
    assert (tmp_path / f"0-{os.getpid()}.json").exists()
    (tmp_path / "3-1.json").write_bytes(b'{"pid": 1, "fami')

    text = generate_latest(MultiProcessView(live, tmp_path, 0).registry()).decode()
    values = {(s.name, frozenset(s.labels.items())): s.value
              for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert values[("serving_requests_total", IRIS_OK)] == 10 + 5 + 7
    assert values[("serving_queue_depth", IRIS)] == 2 + 3  # the dead worker's gauge is gone
    up = {dict(labels)["worker"] for (name, labels) in values if name == "serving_worker_up"}
    assert up == {"0", "1"}
