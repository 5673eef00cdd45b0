"""A rollout step's numbers from Prometheus samples: pure functions over the raw samples of the
range queries `serving.lifecycle.prometheus` makes, so they are tested with plain numbers.

The window is aligned per replica on its scrapes: from its last scrape at or before the step's
start to its first scrape at or after the step's end (so it never ends before the scrape that
holds the step's last requests). A counter's increase over it is the sum of its sample-to-sample
steps, a drop being a restart (the new value is what it counted since), with no extrapolation:
the numbers are whole requests, as the replicas counted them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from serving.lifecycle.analysis import ERROR_OUTCOMES, ShadowWindow, Window
from serving.monitoring.counters import LATENCY_BUCKETS

REQUESTS = "serving_requests_total"
LATENCY = "serving_request_duration_seconds_bucket"
SHADOW_FIELDS = {  # ShadowWindow field -> counter
    "mirrored": "serving_shadow_requests_total",
    "compared": "serving_shadow_compared_total",
    "label_rows": "serving_shadow_label_rows_total",
    "disagreements": "serving_shadow_disagreements_total",
    "errors": "serving_shadow_errors_total",
}
SHADOW_PRIMARY_LATENCY = "serving_shadow_primary_duration_seconds_bucket"
SHADOW_LATENCY = "serving_shadow_duration_seconds_bucket"
LABELLED = "serving_feedback_labelled_rows_total"  # live accuracy (payload feedback)
CORRECT = "serving_feedback_correct_rows_total"
SERIES = (REQUESTS, LATENCY, *SHADOW_FIELDS.values(), SHADOW_PRIMARY_LATENCY, SHADOW_LATENCY,
          LABELLED, CORRECT)

Samples = list[tuple[float, float]]  # (unix seconds, value), oldest first


@dataclass(frozen=True)
class Series:
    """One time series of a range query's answer."""

    labels: dict[str, str]
    samples: Samples


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def selector(matchers: dict[str, str], names: Sequence[str] = ()) -> str:
    """`{__name__=~"a|b",model="iris"}`: the series of `names` (any, when empty) with these
    exact label values."""
    parts = [f'__name__=~{_quote("|".join(names))}'] if names else []
    parts += [f"{k}={_quote(v)}" for k, v in sorted(matchers.items())]
    return "{" + ",".join(parts) + "}"


def range_query(sel: str, start: float, at: float, margin_s: float) -> str:
    """The raw samples of `sel` from `margin_s` before `start` until `at` (the query's time)."""
    return f"{sel}[{max(1, math.ceil(at - start + margin_s))}s]"


def parse_matrix(doc: Any) -> list[Series]:
    """The series of a Prometheus `matrix` answer (`data.result`); ValueError for anything
    else."""
    if not isinstance(doc, dict) or doc.get("status") != "success":
        raise ValueError(f"prometheus answered {str(doc)[:200]}")
    data = doc.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        raise ValueError("prometheus did not answer a range vector (matrix)")
    out = []
    for item in data.get("result") or []:
        samples = [(float(t), float(v)) for t, v in item.get("values") or []]
        out.append(Series({str(k): str(v) for k, v in (item.get("metric") or {}).items()},
                          samples))
    return out


def increase(samples: Samples, t0: float, t1: float) -> float:
    """A counter's increase from its last sample at or before `t0` to its last at or before
    `t1` (a series born after t0 counted from zero; a drop is a restart)."""
    prev = total = 0.0
    for t, v in samples:
        if t <= t0:
            prev = v
            continue
        if t > t1:
            break
        total += v - prev if v >= prev else v
        prev = v
    return total


@dataclass
class Replica:
    """One scrape target over the step: its aligned window and what became of it."""

    instance: str
    start: float | None  # its last scrape at or before the step's start (None: none)
    end: float | None  # its first scrape at or after the step's end (None: not yet)
    last: float  # its latest scrape
    up: bool  # the latest scrape succeeded
    scrapes: int  # scrapes inside the step
    counts: dict[str, int] = field(default_factory=dict)  # what it served in the window

    @property
    def gone(self) -> bool:
        """Scraped at the start, failing or absent now."""
        return self.start is not None and self.end is None and not self.up


def replicas(up: Iterable[Series], start: float, end: float, now: float,
             grace_s: float) -> list[Replica]:
    """Each target's scrapes (from `up`): where its window starts and ends. A target whose
    latest scrape is older than `grace_s` counts as down (it left service discovery)."""
    out = []
    for s in up:
        samples = s.samples
        if not samples:
            continue
        before = [t for t, _ in samples if t <= start]
        after = [t for t, v in samples if t >= end and v == 1.0]
        last_t, last_v = samples[-1]
        out.append(Replica(
            s.labels.get("instance", "?"), before[-1] if before else None,
            after[0] if after else None, last_t, last_v == 1.0 and now - last_t <= grace_s,
            sum(1 for t, _ in samples if start < t <= end),
        ))
    return sorted(out, key=lambda r: r.instance)


def scrape_interval(up: Iterable[Series]) -> float | None:
    """The median time between two scrapes of a target (None: too few to tell)."""
    gaps = [b[0] - a[0] for s in up for a, b in zip(s.samples, s.samples[1:], strict=False)]
    return statistics.median(gaps) if gaps else None


def _bucket_index(le: str) -> int:
    if le == "+Inf":
        return len(LATENCY_BUCKETS)
    value = float(le)
    for i, bound in enumerate(LATENCY_BUCKETS):
        if math.isclose(bound, value, rel_tol=1e-9):
            return i
    raise ValueError(f"unknown latency bucket le={le}")


def _per_bucket(cumulative: dict[int, float]) -> list[int]:
    out, prev = [], 0
    for i in range(len(LATENCY_BUCKETS) + 1):
        acc = round(cumulative.get(i, prev))
        out.append(max(0, acc - prev))
        prev = max(prev, acc)
    return out


@dataclass
class Totals:
    """Increases summed over replicas, per (series name, version, route, outcome or le)."""

    values: dict[tuple[str, str, str, str], float] = field(default_factory=dict)

    def add(self, s: Series, inc: float) -> None:
        lab = s.labels
        key = (lab.get("__name__", ""), lab.get("version", ""), lab.get("route", ""),
               lab.get("outcome", lab.get("le", "")))
        self.values[key] = self.values.get(key, 0.0) + inc

    def window(self, version: str, route: str) -> Window:
        requests = errors = 0.0
        feedback = {LABELLED: 0.0, CORRECT: 0.0}
        for (name, v, r, extra), n in self.values.items():
            if v != version or r != route:
                continue
            if name == REQUESTS:
                requests += n
                errors += n if extra in ERROR_OUTCOMES else 0.0
            elif name in feedback:
                feedback[name] += n
        return Window(round(requests), round(errors),
                      _per_bucket(self._buckets(LATENCY, version, route)),
                      round(feedback[LABELLED]), round(feedback[CORRECT]))

    def _buckets(self, name: str, version: str, route: str | None = None) -> dict[int, float]:
        """Histogram `name`'s increases per bucket index for `version` (and `route`)."""
        buckets: dict[int, float] = {}
        for (n, v, r, le), inc in self.values.items():
            if n == name and v == version and (route is None or r == route):
                i = _bucket_index(le)
                buckets[i] = buckets.get(i, 0.0) + inc
        return buckets

    def _histogram(self, name: str, version: str) -> list[int]:
        buckets = self._buckets(name, version)
        return _per_bucket(buckets) if buckets else []

    def shadow(self, version: str) -> ShadowWindow:
        counts = {f: round(sum(n for (name, v, _r, _e), n in self.values.items()
                               if name == series and v == version))
                  for f, series in SHADOW_FIELDS.items()}
        return ShadowWindow(**counts,
                            primary_latency=self._histogram(SHADOW_PRIMARY_LATENCY, version),
                            shadow_latency=self._histogram(SHADOW_LATENCY, version))


def sum_window(data: Iterable[Series], reps: Sequence[Replica],
               sides: dict[str, tuple[str, str]]) -> Totals:
    """Each series' increase over its replica's window, summed; each replica's `counts` get
    the requests of each side (name -> (version, route); route "shadow": mirrored copies)."""
    by_instance = {r.instance: r for r in reps}
    totals = Totals()
    for s in data:
        rep = by_instance.get(s.labels.get("instance", ""))
        if rep is None or not s.samples:
            continue
        t0 = rep.start if rep.start is not None else -math.inf
        t1 = rep.end if rep.end is not None else rep.last
        inc = increase(s.samples, t0, t1)
        totals.add(s, inc)
        name, version = s.labels.get("__name__"), s.labels.get("version")
        for side, (v, route) in sides.items():
            counted = (name == REQUESTS and s.labels.get("route") == route) or (
                route == "shadow" and name == SHADOW_FIELDS["mirrored"])
            if counted and version == v:
                rep.counts[side] = rep.counts.get(side, 0) + round(inc)
    return totals
