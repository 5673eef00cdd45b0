"""Where the rollout controller's numbers come from: a MetricSource answers cumulative counts
per (model, version, route), which the controller diffs per window. InProcessSource reads this
server's own counters; `lifecycle/prometheus.py` reads the whole fleet's."""

from __future__ import annotations

from typing import Any, Protocol

from serving.lifecycle.analysis import ERROR_OUTCOMES, ShadowWindow, Window


class MetricSource(Protocol):
    """Cumulative numbers per (model, version, route); the controller diffs them per window."""

    def window(self, model: str, version: str, route: str) -> Window: ...

    def shadow(self, model: str, version: str) -> ShadowWindow: ...


class InProcessSource:
    """This server's own counters (ServingMetrics)."""

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics

    def window(self, model: str, version: str, route: str) -> Window:
        stats = self.metrics.requests.get((model, version, route))
        if stats is None:
            return Window()
        errors = sum(stats.outcomes.get(o, 0) for o in ERROR_OUTCOMES)
        w = Window(sum(stats.outcomes.values()), errors, list(stats.latency.counts))
        payload = getattr(self.metrics, "payload", None)  # live accuracy from feedback
        q = payload.feedback.quality.get((model, version, route)) if payload else None
        if q is not None and q.kind == "class":
            w.labelled, w.correct = q.rows, q.correct
        return w

    def shadow(self, model: str, version: str) -> ShadowWindow:
        s = self.metrics.shadows.get((model, version))
        if s is None:
            return ShadowWindow()
        return ShadowWindow(
            s.compared, s.label_rows, s.disagreements, s.mirrored, s.errors,
            list(s.primary_latency.counts), list(s.shadow_latency.counts),
        )
