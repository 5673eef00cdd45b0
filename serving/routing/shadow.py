"""Shadow mirroring: a copy of a request runs on a shadow version after the primary has been
scheduled; the client only ever sees the primary's answer. The two answers are compared here."""

from __future__ import annotations

import asyncio
import time
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
        self.primary_latency = Histogram(LATENCY_BUCKETS)  # submit -> result, primary
        self.shadow_latency = Histogram(LATENCY_BUCKETS)  # submit -> result, shadow

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


class Mirror:
    """Waits for both answers of one mirrored request (done-callbacks, no task), then compares."""

    __slots__ = ("finished", "late", "primary", "shadow", "started", "stats")

    def __init__(self, stats: ShadowStats, primary: asyncio.Future[Any],
                 shadow: asyncio.Future[Any]) -> None:
        self.stats = stats
        self.primary = primary
        self.shadow = shadow
        self.started = time.perf_counter()
        self.finished = False
        # Mirrored after the primary answered: only the shadow's own latency is measured.
        self.late = primary.done()
        if not self.late:
            primary.add_done_callback(self._done)
        shadow.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        now = time.perf_counter()
        if fut is self.primary:
            self.stats.primary_latency.observe(now - self.started)
        else:
            if fut.cancelled() or fut.exception() is not None:
                self.stats.errors += 1
            else:
                self.stats.shadow_latency.observe(now - self.started)
        if self.finished or not (self.primary.done() and self.shadow.done()):
            return
        self.finished = True
        if self.primary.cancelled() or self.primary.exception() is not None:
            return
        if self.shadow.cancelled() or self.shadow.exception() is not None:
            return
        compare(self.stats, self.primary.result()[0], self.shadow.result()[0])
