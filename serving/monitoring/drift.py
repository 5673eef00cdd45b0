"""Input quality and drift against the reference profile in the manifest.

Accounting is vectorised per batch and runs where the batch ran (a worker thread, or the loop
for microsecond batches), never per request on the event loop. A window keeps the last
`window_rows` to `2 * window_rows` rows (two halves: when the current half is full it replaces
the previous one).
"""

from __future__ import annotations

import math
import random
import threading
import time
from datetime import datetime
from typing import Any

import numpy as np

from serving.errors import BadRequest
from serving.monitoring.categorical import CategoricalCounts

_EPS = 1e-4  # floor for empty bins in the PSI
CHUNK = 1024  # rows buffered before they are counted


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of `actual` against `expected` (both shares)."""
    e = np.maximum(expected, _EPS)
    a = np.maximum(actual, _EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def ks(expected: np.ndarray, actual: np.ndarray) -> float:
    """Largest gap between the two binned CDFs (a Kolmogorov-Smirnov-style distance)."""
    return float(np.max(np.abs(np.cumsum(expected) - np.cumsum(actual)))) if expected.size else 0.0


class _Half:
    __slots__ = ("bins", "nan", "oor", "out", "rows")

    def __init__(self, n_features: int, width: int, out_widths: list[int]) -> None:
        self.rows = 0
        self.bins = np.zeros((n_features, width), np.int64)
        self.nan = np.zeros(n_features, np.int64)
        self.oor = np.zeros(n_features, np.int64)
        self.out = [np.zeros(w, np.int64) for w in out_widths]


class DriftMonitor:
    """Per model version: counts per reference bin, NaN and out-of-range rows, outputs."""

    def __init__(
        self, reference: dict[str, Any], created_at: str, window_rows: int = 10_000,
        sample: float = 1.0, psi_threshold: float = 0.2, max_rows_per_batch: int = 8,
        min_rows: int = 1_000,
    ) -> None:
        feats = reference["features"]
        self.input_name = str(reference.get("input", "input"))
        self.names = [f["name"] for f in feats]
        self.reference_rows = int(reference.get("rows", 0))
        n = len(feats)
        k = max((len(f["edges"]) for f in feats), default=0)
        self._width = k + 2  # bins, plus one column that collects NaN rows
        self._edges = np.full((n, max(k, 1)), np.inf)
        for i, f in enumerate(feats):
            self._edges[i, : len(f["edges"])] = f["edges"]
        self._edges_t = np.ascontiguousarray(self._edges.T)  # one row per edge rank
        if k > 120:
            raise ValueError("at most 120 bins per feature")
        self._nbins = np.array([len(f["shares"]) for f in feats])
        self._ref = [np.asarray(f["shares"], np.float64) for f in feats]
        self._min = np.array([-np.inf if f["min"] is None else f["min"] for f in feats])
        self._max = np.array([np.inf if f["max"] is None else f["max"] for f in feats])
        self._offsets = (np.arange(n) * self._width)[None, :]
        self.outputs: list[tuple[str, dict[str, Any]]] = list(reference.get("outputs", {}).items())
        self._out_widths = [
            len(spec["classes"]) + 1 if spec["kind"] == "classes" else len(spec["shares"])
            for _, spec in self.outputs
        ]
        self.window_rows = window_rows
        self.sample = sample
        self.max_rows_per_batch = max(1, max_rows_per_batch)
        self.psi_threshold = psi_threshold
        # below this many rows the window is too small to judge (a window never holds more
        # than 2 * window_rows, and holds at least window_rows once the first half is full)
        self.min_rows = max(1, min(min_rows, window_rows))
        self.created_at = created_at
        self._lock = threading.Lock()
        self._current = _Half(n, self._width, self._out_widths)
        self._n_features = n
        self._out_names = [name for name, _ in self.outputs]
        self._pending_x: list[np.ndarray] = []
        self._pending_out: list[list[np.ndarray]] = [[] for _ in self.outputs]
        self._buffered = 0  # rows pending
        self._classes = {name: np.asarray(spec["classes"], np.float64)
                         for name, spec in self.outputs if spec["kind"] == "classes"}
        self._out_edges = {name: np.asarray(spec["edges"], np.float64)
                           for name, spec in self.outputs if spec["kind"] != "classes"}
        self._previous: _Half | None = None
        cats = reference.get("categorical")
        self._cats = CategoricalCounts(cats) if cats else None

    # ---- per batch (worker thread) ------------------------------------------------------------

    def observe(self, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        """Keep a batch's rows for counting (about a microsecond: a small copy of the inputs,
        references to the outputs); every CHUNK rows are counted in one vectorised pass, so
        numpy's per-call overhead is paid per chunk, not per batch."""
        if self.sample < 1.0 and random.random() >= self.sample:
            return
        x = feeds.get(self.input_name)
        fresh = x is None
        if fresh:
            x = self._column_block(feeds)  # a tabular model: one input per column, copied
        if x is None or x.ndim != 2 or x.shape[1] != self._n_features:
            return
        outs = [outputs.get(name) for name in self._out_names]
        step = 1
        n = len(x)
        if n > self.max_rows_per_batch:
            # a strided sample of big batches: the window stays representative and a 64-row
            # request costs what an 8-row one does
            step = -(-n // self.max_rows_per_batch)
            x = x[::step]
            outs = [None if a is None else a[::step] for a in outs]
            n = len(x)
        # The inputs may sit in a batch buffer the next batch reuses: copy them (a few rows;
        # a tabular model's column block is a copy already). ONNX Runtime's outputs are fresh
        # arrays per run: a reference is enough.
        if not fresh:
            x = x.copy()
        with self._lock:
            self._pending_x.append(x)
            for pend, arr in zip(self._pending_out, outs, strict=True):
                pend.append(np.full(n, np.nan) if arr is None or len(arr) != n else arr)
            self._buffered += n
            if self._cats is not None:
                self._cats.add(feeds, step)
            if self._buffered >= CHUNK:
                self._count()

    def _gather(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """The pending rows as one float64 input block and one column per output (the first
        value of each row); caller holds the lock."""
        x = np.concatenate(self._pending_x, dtype=np.float64)
        cols = []
        for pend in self._pending_out:
            try:
                block = np.concatenate(pend)
            except ValueError:  # a missing output (NaN column) beside 2-D ones
                block = np.concatenate([a.reshape(len(a), -1)[:, 0] for a in pend])
            cols.append(block.reshape(len(block), -1)[:, 0].astype(np.float64, copy=False))
        self._pending_x = []
        self._pending_out = [[] for _ in self.outputs]
        return x, cols

    def _count(self) -> None:
        """Fold the buffered rows into the window (caller holds the lock)."""
        if not self._pending_x:
            return
        self._buffered = 0
        x, cols = self._gather()
        n = len(x)
        finite = np.isfinite(x)
        nan = n - finite.sum(axis=0)
        with np.errstate(invalid="ignore"):
            oor = ((x < self._min) | (x > self._max)).sum(axis=0)
            # edges a value equals count as below it, as searchsorted(side="right") did for the
            # reference (quantile edges often equal data values)
            # one pass per edge column (about ten) is far cheaper than a 3-D comparison
            # reduced over a short trailing axis
            small = np.zeros(x.shape, np.int8)
            for edge in self._edges_t:
                np.add(small, x >= edge, out=small, casting="unsafe")
        idx = small.astype(np.intp)
        idx[~finite] = self._width - 1  # NaN/Inf rows go to the extra column
        counts = np.bincount((idx + self._offsets).ravel(), minlength=self._edges.shape[0]
                             * self._width).reshape(-1, self._width)
        cur = self._current
        cur.rows += n
        cur.bins += counts
        cur.nan += nan
        cur.oor += oor
        for (_name, spec), width, vals, acc in zip(
            self.outputs, self._out_widths, cols, cur.out, strict=True
        ):
            if spec["kind"] == "classes":
                classes = self._classes[_name]
                pos = np.searchsorted(classes, vals)
                hit = pos < len(classes)
                hit[hit] = classes[pos[hit]] == vals[hit]
                pos = np.where(hit, pos, len(classes))
            else:
                pos = np.searchsorted(self._out_edges[_name], vals, side="right")
            acc += np.bincount(pos, minlength=width)[:width]
        if self._cats is not None:
            self._cats.fold()
        if cur.rows >= self.window_rows:
            self._previous = cur
            self._current = _Half(len(self.names), self._width, self._out_widths)
            if self._cats is not None:
                self._cats.roll()

    # ---- enforcement (event loop, before queueing) ---------------------------------------------

    def enforce(self, feeds: dict[str, np.ndarray]) -> None:
        """400 naming the feature for NaN/Infinity or a value outside the reference range."""
        x = feeds.get(self.input_name)
        where = f"input {self.input_name!r}: feature"
        if x is None:
            x, where = self._column_block(feeds), "column"  # a tabular model
        if x is None or x.ndim != 2 or x.shape[1] != len(self.names):
            return
        bad = ~np.isfinite(x)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise BadRequest(
                f"{where} {self.names[col]!r} is {x[row, col]} "
                f"(row {row}); this model refuses NaN and Infinity"
            )
        out = (x < self._min) | (x > self._max)
        if out.any():
            row, col = np.argwhere(out)[0]
            raise BadRequest(
                f"{where} {self.names[col]!r} = {float(x[row, col]):g} "
                f"(row {row}) is outside the training range [{self._min[col]:g}, "
                f"{self._max[col]:g}]"
            )

    # ---- reports ---------------------------------------------------------------------------------

    def _window(self) -> _Half:
        with self._lock:
            self._count()  # what is still buffered belongs in the report
            cur, prev = self._current, self._previous
            total = _Half(len(self.names), self._width, self._out_widths)
            for half in (cur, prev):
                if half is None:
                    continue
                total.rows += half.rows
                total.bins += half.bins
                total.nan += half.nan
                total.oor += half.oor
                for acc, add in zip(total.out, half.out, strict=True):
                    acc += add
        return total

    def age_seconds(self) -> float:
        try:
            return max(0.0, time.time() - datetime.fromisoformat(self.created_at).timestamp())
        except ValueError:
            return 0.0

    def report(self) -> dict[str, Any]:
        """The window against the reference. Below `min_rows` rows the status is "not enough
        data": distances read 0 and nothing is drifted (a PSI over a handful of rows is noise)."""
        w = self._window()
        enough = w.rows >= self.min_rows
        features = [self._feature(w, i, enough) for i in range(len(self.names))]
        features += self._categorical_report(enough)
        features.sort(key=lambda f: -f["psi"])
        outputs = {name: _output_entry(spec, counts, enough, self.psi_threshold)
                   for (name, spec), counts in zip(self.outputs, w.out, strict=True)}
        return {
            "status": "ok" if enough else "not enough data",
            "window_rows": int(w.rows),
            "min_rows": self.min_rows,
            "reference_rows": self.reference_rows,
            "psi_threshold": self.psi_threshold,
            "age_seconds": round(self.age_seconds(), 1),
            "features": features,
            "outputs": outputs,
        }

    def _feature(self, w: _Half, i: int, enough: bool) -> dict[str, Any]:
        seen = w.bins[i, : self._nbins[i]]
        total = int(seen.sum())
        judged = enough and total > 0
        shares = seen / total if total else np.zeros(self._nbins[i])
        p = psi(self._ref[i], shares) if judged else 0.0
        return {
            "name": self.names[i],
            "psi": round(p, 5),
            "ks": round(ks(self._ref[i], shares), 5) if judged else 0.0,
            "nan_share": round(float(w.nan[i]) / w.rows, 6) if w.rows else 0.0,
            "out_of_range_share": round(float(w.oor[i]) / w.rows, 6) if w.rows else 0.0,
            "drifted": bool(judged and p > self.psi_threshold),
        }


    # ---- tabular models: one input per column ----------------------------------------------------

    def _column_block(self, feeds: dict[str, np.ndarray]) -> np.ndarray | None:
        """The numeric feature columns side by side in a new float64 block (each an input of
        shape [N] or [N, 1]), or None when the batch does not have them all; with only
        categorical columns, an empty [N, 0] block that carries the row count."""
        cols = []
        for name in self.names:
            arr = feeds.get(name)
            if arr is None or arr.size != len(arr):
                return None
            if arr.ndim != 2:
                if arr.ndim != 1:
                    return None
                arr = arr.reshape(-1, 1)
            cols.append(arr)
        if cols:
            # one C call (np.column_stack took about 5 us per batch in Python)
            return np.concatenate(cols, axis=1, dtype=np.float64)
        rows = self._cats.rows_of(feeds) if self._cats is not None else None
        return None if rows is None else np.empty((rows, 0))

    def _categorical_report(self, enough: bool) -> list[dict[str, Any]]:
        """String columns against their reference shares; never drifted below `min_rows`."""
        if self._cats is None:
            return []
        with self._lock:
            counts = self._cats.window()
        return self._cats.report(counts, self.psi_threshold if enough else math.inf, psi)


def _output_entry(
    spec: dict[str, Any], counts: np.ndarray, enough: bool, threshold: float
) -> dict[str, Any]:
    """One output's distances against its reference shares (0 until there is enough data)."""
    total = int(counts.sum())
    judged = enough and total > 0
    ref = np.asarray(spec["shares"], np.float64)
    seen = counts[: len(ref)] / total if total else np.zeros(len(ref))
    p = psi(ref, seen) if judged else 0.0
    entry: dict[str, Any] = {"kind": spec["kind"], "psi": round(p, 5),
                             "ks": round(ks(ref, seen), 5) if judged else 0.0,
                             "drifted": bool(judged and p > threshold)}
    if spec["kind"] == "classes":
        entry["shares"] = {str(c): round(float(s), 5)
                           for c, s in zip(spec["classes"], seen, strict=True)}
        entry["reference_shares"] = {str(c): round(float(s), 5)
                                     for c, s in zip(spec["classes"], ref, strict=True)}
        entry["unknown_share"] = round(float(counts[-1]) / total, 5) if total else 0.0
    return entry
