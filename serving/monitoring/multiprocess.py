"""One `/metrics` view across worker processes.

Each worker writes a snapshot of its own metric families to `<dir>/<worker>-<pid>.json` every
`interval` seconds (and when it stops); whichever worker answers a scrape merges its live families
with every other snapshot, as prometheus-client's multiprocess mode does with its files:

- counters and histograms add up, including the last snapshot of workers that died or were
  restarted, so sums never go backwards when a worker is replaced;
- gauges come from live workers only and combine by what they mean: queue depths, in-flight
  requests and drift window rows add up; everything else (model state, load time, canary weight,
  rollout state, drift and shadow statistics) takes the largest value, the worst worker's view.

Other workers' figures are at most `interval` seconds old.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

SUMMED_GAUGES = frozenset({
    "serving_queue_depth", "serving_inflight_requests", "serving_drift_window_rows",
})


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def snapshot(registry: CollectorRegistry, worker: int) -> dict[str, Any]:
    """This process's families as plain data (what a snapshot file holds)."""
    fams = [
        {"name": m.name, "doc": m.documentation, "type": m.type,
         "samples": [[s.name, s.labels, s.value] for s in m.samples]}
        for m in registry.collect()
    ]
    return {"pid": os.getpid(), "worker": worker, "families": fams}


def write_snapshot(registry: CollectorRegistry, directory: Path, worker: int) -> None:
    path = directory / f"{worker}-{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(snapshot(registry, worker)))
    os.replace(tmp, path)


def merge(pairs: Iterable[tuple[bool, dict[str, Any]]]) -> list[Metric]:
    """Merge (alive, snapshot) pairs into families, as described in the module's docstring,
    plus per-worker liveness and request counts."""
    snapshots = list(pairs)
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for alive, snap in snapshots:
        for fam in snap.get("families", ()):
            name, kind = fam["name"], fam["type"]
            if kind == "gauge" and not alive:
                continue
            if name not in merged:
                merged[name] = Metric(name, fam["doc"], kind)
                values[name] = {}
            acc = values[name]
            use_max = kind == "gauge" and name not in SUMMED_GAUGES
            for sample_name, labels, value in fam["samples"]:
                key = (sample_name, tuple(sorted(labels.items())))
                if key not in acc:
                    acc[key] = value
                elif use_max:
                    acc[key] = max(acc[key], value)
                else:
                    acc[key] = acc[key] + value
    for name, metric in merged.items():
        for (sample_name, labels), value in values[name].items():
            metric.samples.append(Sample(sample_name, dict(labels), value))
    return [*merged.values(), *_per_worker(snapshots)]


def _per_worker(snapshots: list[tuple[bool, dict[str, Any]]]) -> list[Metric]:
    """Which workers are up, and how many requests each has answered (incarnations added)."""
    up = Metric("serving_worker_up", "1 for each live worker process", "gauge")
    served = Metric("serving_worker_requests", "Inference requests answered per worker",
                    "counter")
    totals: dict[str, float] = {}
    for alive, snap in snapshots:
        worker = str(snap.get("worker", ""))
        if alive:
            up.samples.append(Sample("serving_worker_up", {"worker": worker}, 1.0))
        n = sum(v for fam in snap.get("families", ()) if fam["name"] == "serving_requests"
                for name, _labels, v in fam["samples"] if name == "serving_requests_total")
        totals[worker] = totals.get(worker, 0.0) + n
    for worker, n in sorted(totals.items()):
        served.samples.append(Sample("serving_worker_requests_total", {"worker": worker}, n))
    return [up, served]


class MultiProcessView(Collector):
    """A collector over this worker's live registry and its siblings' snapshots."""

    def __init__(self, live: CollectorRegistry, directory: Path, worker: int) -> None:
        self.live = live
        self.directory = directory
        self.worker = worker

    def _snapshots(self) -> Iterator[tuple[bool, dict[str, Any]]]:
        yield True, snapshot(self.live, self.worker)
        own = f"{self.worker}-{os.getpid()}.json"
        for path in sorted(self.directory.glob("*.json")):
            if path.name == own:
                continue
            with contextlib.suppress(OSError, ValueError):
                snap = orjson.loads(path.read_bytes())
                yield _pid_alive(int(snap.get("pid", 0))), snap

    def collect(self) -> Iterator[Metric]:
        yield from merge(self._snapshots())

    def registry(self) -> CollectorRegistry:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(self)
        return reg
