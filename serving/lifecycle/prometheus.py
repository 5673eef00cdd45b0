"""The fleet's numbers for a rollout step, from Prometheus's HTTP query API: every replica's
counters and histograms summed over the step's window (`serving.lifecycle.promwindow` does the
arithmetic).

Two instant queries per look, both at the same evaluation time: the targets' `up` samples (who
was scraped when: the window's alignment, and replicas that stopped being scraped) and the raw
samples of the model's series. Until every replica still scraped has a scrape at or after the
step's end, the step is not judged; when Prometheus is unreachable, answers an error or has too
few samples, the answer is `Missing(reason)`: the controller waits (never promotes on missing
data) and pauses the rollout once that has lasted `data_timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from serving.client import Client, Refused, Unreachable
from serving.errors import BadRequest
from serving.lifecycle.analysis import ShadowWindow, Window
from serving.lifecycle.promwindow import (
    SERIES,
    Replica,
    parse_matrix,
    range_query,
    replicas,
    scrape_interval,
    selector,
    sum_window,
)

log = logging.getLogger("serving.rollout")

SOURCES = ("local", "prometheus")
MARGIN_S = 30.0  # samples fetched before the step's start (a target's last scrape before it)


@dataclass(frozen=True)
class FleetMetrics:
    """Where a rollout's numbers come from (`--rollout-metrics`, model.toml, or the plan)."""

    source: str = "local"  # "local": this process's counters; "prometheus": the fleet's
    prometheus_url: str = ""
    job: str = "serving"  # the replicas' scrape job (their `job` label)
    data_timeout_s: float = 120.0  # missing data this long after a step's end: pause

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"rollout metrics come from 'local' or 'prometheus', not "
                             f"{self.source!r}")
        if self.source == "prometheus" and not self.prometheus_url.startswith(
                ("http://", "https://")):
            raise ValueError("rollout metrics from prometheus need prometheus_url (http://...)")
        if not self.data_timeout_s > 0:
            raise ValueError("data_timeout_s must be > 0 seconds")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any, default: FleetMetrics | None = None) -> FleetMetrics:
        """Fields given in `obj` over `default` (or the defaults); ValueError when wrong."""
        if not isinstance(obj, dict):
            raise ValueError("metrics must be a JSON object")
        unknown = set(obj) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown metrics settings: {', '.join(sorted(unknown))}")
        base = asdict(default or cls())
        try:
            base.update({k: type(base[k])(v) for k, v in obj.items()})
        except (TypeError, ValueError):
            raise ValueError("metrics settings have the wrong type") from None
        return cls(**base)


def rollout_metrics(plan: dict[str, Any] | None, model_config: Any,
                    server: FleetMetrics) -> FleetMetrics:
    """A rollout's settings: the plan's `metrics` over the model's `[routing]` keys over the
    server's flags; BadRequest when the result is wrong."""
    model = dict(getattr(model_config, "rollout_metrics", ()))
    if "rollout_metrics" in model:
        model["source"] = model.pop("rollout_metrics")
    try:
        return FleetMetrics.from_json(plan or {}, FleetMetrics.from_json(model, server))
    except ValueError as exc:
        raise BadRequest(f"metrics: {exc}") from None


class Missing(NamedTuple):
    """The step cannot be judged: why (the status shows it), and whether it has been so for
    longer than `data_timeout_s` after the step's end (then the rollout pauses)."""

    reason: str
    late: bool = False

    def __str__(self) -> str:
        return self.reason


class FleetStep(NamedTuple):
    """A step's windows summed over the fleet, and what the decision should show of them."""

    primary: Window
    canary: Window
    promoted: Window
    shadow: ShadowWindow
    measured: dict[str, Any]

    @property
    def note(self) -> str:
        """What the decision's reason adds: replicas lost during the step."""
        gone = self.measured.get("unscraped_replicas")
        return f" (not scraped since the step began: {', '.join(gone)})" if gone else ""


class StepWindow(NamedTuple):
    """What is judged: the model, its two versions, the window, and whether it is a bake."""

    model: str
    baseline: int
    candidate: int
    start: float
    end: float
    baking: bool


Fetch = Callable[[str, float], Any]  # (query, evaluation time) -> Prometheus's JSON answer




class PrometheusSource:
    """Reads a step's numbers from Prometheus (`fetch` in unit tests; HTTP otherwise)."""

    def __init__(self, settings: FleetMetrics, fetch: Fetch | None = None,
                 timeout_s: float = 5.0) -> None:
        self.settings = settings
        self.client = Client(settings.prometheus_url, timeout_s=timeout_s)
        self._fetch = fetch or self._http
        # queries made and their time per step (model, start) until it is judged: the
        # controller's cost, which each decision shows
        self.cost: dict[tuple[str, float], tuple[int, float]] = {}

    def _http(self, query: str, at: float) -> Any:
        params = urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"})
        return self.client.get(f"/api/v1/query?{params}")

    async def _query(self, key: tuple[str, float], query: str, at: float) -> Any:
        t0 = time.perf_counter()
        try:
            return await asyncio.to_thread(self._fetch, query, at)
        finally:
            spent = time.perf_counter() - t0
            n, s = self.cost.get(key, (0, 0.0))
            self.cost[key] = (n + 1, s + spent)

    async def step(self, w: StepWindow, now: float) -> FleetStep | Missing | None:
        """The step's numbers; None while its last scrapes are still to come."""
        if now < w.end:
            return None
        got = await self._step(w, now)
        if isinstance(got, Missing) and now - w.end > self.settings.data_timeout_s:
            return got._replace(late=True)
        return got

    async def _step(self, w: StepWindow, now: float) -> FleetStep | Missing | None:
        key = (w.model, w.start)
        job = {"job": self.settings.job}
        try:
            up = parse_matrix(await self._query(
                key, range_query(selector(job, ["up"]), w.start, now, MARGIN_S), now))
            interval = scrape_interval(up) or 1.0
            reps = replicas(up, w.start, w.end, now, grace_s=3 * interval + 1.0)
            not_ready = _not_ready(reps, w, interval)
            if not_ready is not None:
                return not_ready if isinstance(not_ready, Missing) else None
            sel = selector({**job, "model": w.model}, SERIES)
            data = parse_matrix(await self._query(
                key, range_query(sel, w.start, now, MARGIN_S), now))
        except (Refused, Unreachable, ValueError, OSError) as exc:
            return Missing(f"prometheus at {self.settings.prometheus_url}: {exc}")
        base, cand = str(w.baseline), str(w.candidate)
        sides = {"primary": (base, "primary")}
        sides["candidate"] = (cand, "primary") if w.baking else (cand, "canary")
        sides["mirrored"] = (cand, "shadow")
        totals = sum_window(data, reps, sides)
        n, spent = self.cost.pop(key, (0, 0.0))
        return FleetStep(
            totals.window(base, "primary"), totals.window(cand, "canary"),
            totals.window(cand, "primary"), totals.shadow(cand),
            _measured(reps, now - w.end, n, spent),
        )


class FleetSources:
    """One PrometheusSource per settings a rollout names (they keep their query counts)."""

    def __init__(self, make: Callable[[FleetMetrics], PrometheusSource] = PrometheusSource,
                 ) -> None:
        self.make = make
        self.sources: dict[FleetMetrics, PrometheusSource] = {}

    def get(self, metrics: dict[str, Any] | None) -> PrometheusSource | None:
        """The source of a rollout's `metrics` (None: the controller's own process)."""
        if not metrics or metrics.get("source") != "prometheus":
            return None
        settings = FleetMetrics.from_json(metrics)
        if settings not in self.sources:
            self.sources[settings] = self.make(settings)
        return self.sources[settings]


def _not_ready(reps: list[Replica], w: StepWindow, interval: float) -> Missing | bool | None:
    """Missing (with why), True (wait for a scrape still to come) or None (ready)."""
    if not reps:
        return Missing("prometheus has no scrape targets for the replicas (up{job=...})")
    if not any(r.start is not None for r in reps):
        return Missing("no replica was scraped before the step started")
    if any(r.end is None and r.up for r in reps):
        return True  # a live replica's scrape after the step's end is still to come
    expected = (w.end - w.start) / interval
    for r in reps:  # (a replica that joined during the step has its own shorter window)
        if r.start is not None and r.end is not None and r.scrapes < max(2.0, expected / 2):
            return Missing(f"too few samples from {r.instance}: {r.scrapes} scrapes in the "
                           f"step, about {expected:.0f} expected")
    if all(r.end is None for r in reps):
        return Missing("no replica was scraped after the step ended")
    return None


def _measured(reps: list[Replica], delay_s: float, queries: int,
              spent: float) -> dict[str, Any]:
    starts = [r.start for r in reps if r.start is not None]
    ends = [r.end if r.end is not None else r.last for r in reps]
    out: dict[str, Any] = {
        "replicas": {r.instance: {**r.counts, "window": [r.start, r.end or r.last]}
                     for r in reps if r.start is not None or r.counts},
        "window_start": min(starts), "window_end": max(ends),
        "decided_after_s": round(delay_s, 3), "prometheus_queries": queries,
        "prometheus_ms": round(spent * 1e3, 1),
    }
    gone = [r.instance for r in reps if r.gone]
    if gone:
        out["unscraped_replicas"] = gone
    return out
