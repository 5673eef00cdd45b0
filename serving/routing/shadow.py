"""Shadow mirroring: a copy of a request runs on a shadow version once the primary has
answered; the client only ever sees the primary's answer. The two answers are compared here."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from serving.monitoring.counters import ShadowStats

Outputs = dict[str, np.ndarray]


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
    once the primary has answered), when the shadow's comes; the copy counts as mirrored then.
    Both latencies are the scheduler's time for the request: queue wait plus its batch's run."""
    outputs, _rows, waited, run_s = primary
    stats.primary_latency.observe(waited + run_s)

    def done(fut: asyncio.Future[Any]) -> None:
        # mirrored moves with compared or errors: a window never compares more than it sent
        stats.mirrored += 1
        if fut.cancelled() or fut.exception() is not None:
            stats.errors += 1
            return
        shadow_outputs, _rows, s_waited, s_run = fut.result()
        stats.shadow_latency.observe(s_waited + s_run)
        compare(stats, outputs, shadow_outputs)

    shadow.add_done_callback(done)
