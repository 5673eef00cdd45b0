"""Drift and data quality of categorical (string) columns against the reference profile.

The reference (written by serving/packaging/profile.py) lists the string columns as
`profile["categorical"] = [{"name", "input", "categories": [...], "shares": [...],
"other_share", "missing_share"}, ...]`: the most frequent categories and each one's share of the
rows, the share of rows in the rarer categories left out, and the share of missing values (an
empty string). Served rows are counted per category, plus one bucket for categories the list does
not hold ("unseen": the reference's `other_share` is its share there) and one for missing values.
The caller (DriftMonitor) holds its lock around every method and rolls the window halves at the
same row counts as the numeric features.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

MISSING = frozenset({"", "nan", "NaN", "None", "null"})  # what a DataFrame's gaps become as text


class _Column:
    __slots__ = ("categories", "index", "missing_share", "name", "other_share", "shares")

    def __init__(self, spec: dict[str, Any]) -> None:
        self.name = name = str(spec.get("input") or spec["name"])
        self.categories = [str(c) for c in spec["categories"]]
        shares = np.asarray(spec["shares"], np.float64)
        if len(shares) != len(self.categories) or len(self.categories) > 10_000:
            raise ValueError(f"categorical column {name!r}: one share per category needed "
                             "(at most 10,000 categories)")
        other = float(spec.get("other_share", 0.0))
        total = shares.sum() + other  # among the rows that had a value
        self.shares = shares / total if total > 0 else shares
        self.other_share = other / total if total > 0 else 0.0
        self.missing_share = float(spec.get("missing_share", 0.0))
        self.index = {c: i for i, c in enumerate(self.categories)}


class CategoricalCounts:
    """Counts per category, unseen and missing for each categorical column, in two halves."""

    def __init__(self, spec: list[dict[str, Any]]) -> None:
        self.columns = [_Column(s) for s in spec]
        self.names = [c.name for c in self.columns]
        self._pending: list[list[np.ndarray]] = [[] for _ in self.columns]
        self._current = self._zeros()
        self._previous: list[np.ndarray] | None = None

    def _zeros(self) -> list[np.ndarray]:
        # per column: the categories, then unseen, then missing
        return [np.zeros(len(c.categories) + 2, np.int64) for c in self.columns]

    def rows_of(self, feeds: dict[str, np.ndarray]) -> int | None:
        """The rows of the first categorical column present in `feeds`, if any."""
        for name in self.names:
            arr = feeds.get(name)
            if arr is not None and arr.ndim:
                return len(arr)
        return None

    def add(self, feeds: dict[str, np.ndarray], step: int) -> None:
        """Keep every `step`-th value of each column (object arrays: references, no copy of
        the strings; the batch buffer may be reused, so the array itself is copied)."""
        for pend, name in zip(self._pending, self.names, strict=True):
            arr = feeds.get(name)
            if arr is None or not arr.ndim:
                continue
            if arr.ndim != 2:
                arr = arr.reshape(len(arr), -1)
            pend.append(arr[::step, 0].copy())

    def fold(self) -> None:
        """Count the pending values into the current half."""
        for col, pend, acc in zip(self.columns, self._pending, self._current, strict=True):
            if not pend:
                continue
            values = np.concatenate(pend)
            uniq, counts = np.unique(values.astype(str), return_counts=True)
            unseen = len(col.categories)
            for value, n in zip(uniq.tolist(), counts.tolist(), strict=True):
                if value in MISSING:
                    acc[unseen + 1] += n
                else:
                    acc[col.index.get(value, unseen)] += n
        self._pending = [[] for _ in self.columns]

    def roll(self) -> None:
        """The current half becomes the previous one (the numeric window rolled)."""
        self._previous = self._current
        self._current = self._zeros()

    def window(self) -> list[np.ndarray]:
        """Counts of both halves together."""
        if self._previous is None:
            return [c.copy() for c in self._current]
        return [c + p for c, p in zip(self._current, self._previous, strict=True)]

    def report(
        self, counts: list[np.ndarray], psi_threshold: float,
        psi: Callable[[np.ndarray, np.ndarray], float],
    ) -> list[dict[str, Any]]:
        """Per column: the numeric features' keys (psi, ks as the largest share gap, nan_share
        for missing values, out_of_range_share for unseen categories, drifted), and the shares
        themselves."""
        out = []
        for col, acc in zip(self.columns, counts, strict=True):
            rows = int(acc.sum())
            present = acc[:-1]  # categories and unseen: the rows that had a value
            total = int(present.sum())
            seen = present / total if total else np.zeros(len(present))
            ref = np.append(col.shares, col.other_share)
            p = psi(ref, seen) if total else 0.0
            gap = float(np.max(np.abs(ref - seen))) if total else 0.0
            unseen = float(acc[-2]) / rows if rows else 0.0
            out.append({
                "name": col.name,
                "kind": "categorical",
                "psi": round(p, 5),
                "ks": round(gap, 5),
                "nan_share": round(float(acc[-1]) / rows, 6) if rows else 0.0,
                "out_of_range_share": round(unseen, 6),
                "unseen_share": round(unseen, 6),
                "missing_share": round(float(acc[-1]) / rows, 6) if rows else 0.0,
                "reference_missing_share": col.missing_share,
                "shares": {c: round(float(s), 5)
                           for c, s in zip(col.categories, seen[:-1], strict=True)},
                "reference_shares": {c: round(float(s), 5)
                                     for c, s in zip(col.categories, col.shares, strict=True)},
                "drifted": bool(total and p > psi_threshold),
            })
        return out
