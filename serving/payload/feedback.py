"""Ground-truth feedback: true labels or values sent after the fact, joined by request id with
what the server answered, and the live quality that follows (per model, version and route).

Everything here runs on the event loop thread (the feedback route and the scrape), never on
the inference path: a request's only cost is its capture (see `serving.payload.log`).
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from serving.errors import BadRequest
from serving.monitoring.counters import Histogram
from serving.payload.record import Answer

# Seconds between a prediction and its feedback: a second to a month.
DELAY_BUCKETS = (1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0, 604800.0, 2592000.0)
MAX_ITEMS = 10_000  # per batch
SEEN_IDS = 200_000  # ids whose feedback is remembered, to refuse duplicates
Truth = int | float | str | bool


class Item:
    """One feedback entry: a request id and the truth for each of its rows."""

    __slots__ = ("id", "truth")

    def __init__(self, rid: str, truth: list[Truth]) -> None:
        self.id = rid
        self.truth = truth


def _item(obj: Any) -> Item:
    if not isinstance(obj, dict):
        raise BadRequest("a feedback entry is an object with 'id' and 'truth'")
    rid, truth = obj.get("id"), obj.get("truth")
    if not isinstance(rid, str) or not 0 < len(rid) <= 256:
        raise BadRequest("feedback 'id' must be the request's id (a string of 1..256 chars)")
    rows: list[Any] = truth if isinstance(truth, list) else [truth]
    if not rows or not all(isinstance(t, int | float | str) for t in rows):
        raise BadRequest(f"feedback for {rid!r}: 'truth' must be a label or value, or a list "
                         "of one per row")
    if any(isinstance(t, float) and not math.isfinite(t) for t in rows):
        raise BadRequest(f"feedback for {rid!r}: 'truth' must be finite")
    return Item(rid, rows)


def parse(body: bytes) -> tuple[list[Item | BadRequest], bool]:
    """Entries (or why each is invalid) and whether the body was the batch form
    `{"feedback": [...]}`; a body that is neither form is a 400."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"feedback body is not JSON: {exc}") from None
    if isinstance(doc, dict) and "feedback" in doc:
        entries = doc["feedback"]
        if not isinstance(entries, list) or not entries or len(entries) > MAX_ITEMS:
            raise BadRequest(f"'feedback' must be a list of 1..{MAX_ITEMS} entries")
        out: list[Item | BadRequest] = []
        for e in entries:
            try:
                out.append(_item(e))
            except BadRequest as exc:
                out.append(exc)
        return out, True
    return [_item(doc)], False


class Quality:
    """Live quality of one (model, version, route): cumulative counts and a sliding window of
    the last labelled rows (predicted, true)."""

    def __init__(self, kind: str, window: int) -> None:
        self.kind = kind
        self.requests = 0  # requests that got feedback
        self.rows = 0  # labelled rows
        self.correct = 0  # classifier rows predicted right
        self.window: deque[tuple[Any, Any]] = deque(maxlen=window)

    def add(self, predicted: list[Any], truth: list[Any]) -> None:
        self.requests += 1
        self.rows += len(truth)
        if self.kind == "class":
            self.correct += sum(p == t for p, t in zip(predicted, truth, strict=True))
        self.window.extend(zip(predicted, truth, strict=True))

    def summary(self) -> dict[str, Any]:
        """Accuracy and per-class precision and recall, or MAE and RMSE, over the window."""
        pairs = list(self.window)
        if not pairs:
            return {"rows": 0}
        if self.kind == "value":
            err = np.array([float(p) - float(t) for p, t in pairs])
            return {"rows": len(pairs), "mae": float(np.abs(err).mean()),
                    "rmse": float(np.sqrt((err**2).mean()))}
        named = [(str(p), str(t)) for p, t in pairs]
        predicted = Counter(p for p, _ in named)
        actual = Counter(t for _, t in named)
        tp = Counter(p for p, t in named if p == t)
        per_class = {c: {"precision": tp[c] / predicted[c] if predicted[c] else None,
                         "recall": tp[c] / actual[c] if actual[c] else None}
                     for c in sorted(predicted.keys() | actual.keys())}
        hits = sum(p == t for p, t in pairs)
        return {"rows": len(pairs), "accuracy": hits / len(pairs), "classes": per_class}


class FeedbackBook:
    """Joins feedback with logged predictions; owns the live quality and feedback counters."""

    def __init__(self) -> None:
        self.quality: dict[tuple[str, str, str], Quality] = {}
        self.outcomes: dict[tuple[str, str], int] = {}  # (model, outcome) -> entries
        self.delay: dict[str, Histogram] = {}
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def count(self, model: str, outcome: str, n: int = 1) -> None:
        self.outcomes[(model, outcome)] = self.outcomes.get((model, outcome), 0) + n

    def is_duplicate(self, model: str, rid: str) -> bool:
        return (model, rid) in self._seen

    def apply(self, item: Item, captures: Sequence[Answer], labels: tuple[str, ...],
              now: float, window: int) -> str | None:
        """Fold one entry into every answer logged for its id (the primary's, and shadows');
        None when done, else why it does not fit them."""
        joined: list[tuple[Answer, str, list[Any], list[Any]]] = []
        for c in captures:
            kind, values = c.kind, c.values
            if values is None:
                return f"model {c.model!r} has no label or value output to compare with"
            if kind == "value":
                values = values.astype(np.float64)
            if len(values) != len(item.truth):
                return (f"request {item.id!r} had {len(values)} rows; 'truth' gives "
                        f"{len(item.truth)}")
            truth = _as_kind(kind, item.truth, values, labels)
            if truth is None:
                return f"'truth' for {item.id!r} does not match the model's outputs"
            joined.append((c, kind, values.tolist(), truth))
        for c, kind, predicted, truth in joined:
            key = (c.model, c.version, c.route)
            q = self.quality.get(key)
            if q is None:
                q = self.quality[key] = Quality(kind, window)
            q.add(predicted, truth)
        first = captures[0]
        hist = self.delay.get(first.model)
        if hist is None:
            hist = self.delay[first.model] = Histogram(DELAY_BUCKETS)
        hist.observe(max(0.0, now - first.time))
        self._seen[(first.model, item.id)] = None
        if len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        return None


def _as_kind(kind: str, truth: list[Truth], values: np.ndarray,
             labels: tuple[str, ...]) -> list[Any] | None:
    """The truth in the prediction's terms: class names map to the label output's indices
    (and back), values are floats."""
    if kind == "value":
        if any(isinstance(t, str | bool) for t in truth):
            return None
        return [float(t) for t in truth]
    if values.dtype.kind in "iu":
        out: list[Any] = []
        for t in truth:
            if isinstance(t, str):
                if t not in labels:
                    return None
                out.append(labels.index(t))
            elif isinstance(t, int) and not isinstance(t, bool):
                out.append(t)
            else:
                return None
        return out
    return [labels[t] if isinstance(t, int) and 0 <= t < len(labels) else str(t) for t in truth]
