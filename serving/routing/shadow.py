"""Shadow mirroring: a copy of a request runs on a shadow version once the primary has
answered; the client only ever sees the primary's answer. The two answers are compared here."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from serving.monitoring.metrics import LATENCY_BUCKETS, Histogram

Outputs = dict[str, np.ndarray]


class ShadowStats:
    """Per (model, shadow version), on the loop thread only: what mirroring found."""

    __slots__ = (
        "abs_diff_max", "abs_diff_sum", "compared", "disagreements", "errors", "label_rows",
        "mirrored", "primary_latency", "shadow_latency", "shed", "values",
    )

    def __init__(self) -> None:
        self.mirrored = 0  # copies sent
        self.compared = 0  # pairs of answers compared
        self.label_rows = 0  # rows with a label (integer/string) output compared
        self.disagreements = 0  # of those, rows whose labels differ
        self.values = 0  # numeric output values compared
        self.abs_diff_sum = 0.0
        self.abs_diff_max = 0.0
        self.errors = 0  # the shadow failed or timed out (never shown to the client)
        self.shed = 0  # not mirrored: the shadow's queue was busy (shadow work goes first)
        self.primary_latency = Histogram(LATENCY_BUCKETS)  # queue + run, primary
        self.shadow_latency = Histogram(LATENCY_BUCKETS)  # queue + run, shadow

    def snapshot(self) -> dict[str, Any]:
        return {
            "mirrored": self.mirrored, "compared": self.compared,
            "label_rows": self.label_rows, "disagreements": self.disagreements,
            "values": self.values, "abs_diff_sum": self.abs_diff_sum,
            "errors": self.errors, "shed": self.shed,
            "primary_latency": list(self.primary_latency.counts),
            "shadow_latency": list(self.shadow_latency.counts),
        }


def compare(stats: ShadowStats, primary: Outputs, shadow: Outputs) -> None:
    """Fold one pair of answers into the stats: label agreement per row, abs differences."""
    stats.compared += 1
    differs: np.ndarray | None = None
    for name, p in primary.items():
        s = shadow.get(name)
        if s is None or s.shape != p.shape:
            continue
        if p.dtype.kind in "iubOUS":  # labels
            rows = (p != s).reshape(len(p), -1).any(axis=1) if p.ndim else np.array([p != s])
            differs = rows if differs is None else (differs | rows)
        elif p.dtype.kind == "f" and p.size:
            d = np.abs(p.astype(np.float64) - s.astype(np.float64))
            stats.values += d.size
            stats.abs_diff_sum += float(d.sum())
            stats.abs_diff_max = max(stats.abs_diff_max, float(d.max()))
    if differs is not None:
        stats.label_rows += len(differs)
        stats.disagreements += int(differs.sum())


def watch(stats: ShadowStats, primary: Any, shadow: asyncio.Future[Any]) -> None:
    """Compare a shadow's answer with the primary's, which is already known (copies are sent
    once the primary has answered), when the shadow's comes. Both latencies are the
    scheduler's time for the request: queue wait plus its batch's run."""
    outputs, _rows, waited, run_s = primary
    stats.primary_latency.observe(waited + run_s)

    def done(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            stats.errors += 1
            return
        shadow_outputs, _rows, s_waited, s_run = fut.result()
        stats.shadow_latency.observe(s_waited + s_run)
        compare(stats, outputs, shadow_outputs)

    shadow.add_done_callback(done)
