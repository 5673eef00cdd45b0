"""The feedback route's work: parse, join each entry with the answers logged for its id (in
memory, else in the directory sink's segments, read in a worker thread), fold it into the live
quality, and say what happened to each entry.

It runs on the event loop, in slices of `SLICE` entries with a yield between them, so a flood
of feedback interleaves with inference instead of holding the loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from serving.errors import BadRequest, Conflict, NotFound, Overloaded
from serving.model_config import ModelConfig
from serving.payload.archive import find_logged
from serving.payload.feedback import Item, parse
from serving.payload.log import PayloadLog
from serving.payload.record import Answer

SLICE = 256  # entries joined per loop turn
# Feedback may use at most this share of the event loop's time (per second); past it the route
# answers 503 with Retry-After, so a flood of feedback cannot take more than this from inference
LOOP_SHARE = 0.1
SHOWN = 20  # ids listed per outcome in a batch answer


class FeedbackDesk:
    """Joins feedback for one server: `labels(model, version)` gives a version's class names
    (so the truth may name a class), `config(model)` the model's settings (NotFound if none)."""

    def __init__(
        self, payload: PayloadLog, labels: Callable[[str, str], tuple[str, ...]],
        config: Callable[[str], ModelConfig],
    ) -> None:
        self.payload = payload
        self.book = payload.feedback
        self.labels = labels
        self.config = config
        # one segment search at a time: a flood of unknown ids costs one worker thread
        self._searching = asyncio.Lock()
        self._second = 0.0  # the loop time spent on feedback in the current second
        self._second_at = 0.0

    def _charge(self, started: float) -> None:
        now = time.perf_counter()
        if now - self._second_at >= 1.0:
            self._second_at, self._second = now, 0.0
        self._second += now - started

    def _check_budget(self) -> None:
        if self._second >= LOOP_SHARE and time.perf_counter() - self._second_at < 1.0:
            raise Overloaded(f"feedback is using its share ({LOOP_SHARE:.0%}) of the event "
                             "loop this second; retry after a second")

    async def receive(self, model: str, body: bytes) -> dict[str, Any]:
        """The answer to `POST /v2/models/{model}/feedback`. A single entry that cannot be
        applied raises (400 invalid, 404 unknown id, 409 duplicate); a batch answers 200 with
        what happened to each entry, and every entry is counted."""
        self._check_budget()
        started = time.perf_counter()
        cfg = self.config(model)
        entries, batch = parse(body)
        outcome: dict[str, list[Any]] = {"accepted": [], "unknown": [], "duplicate": [],
                                         "invalid": []}
        missing: list[tuple[int, Item]] = []  # (index in the body, entry)
        for i, e in enumerate(entries):
            if i and i % SLICE == 0:
                started = await self._pause(started)
            if isinstance(e, BadRequest):
                outcome["invalid"].append({"index": i, "error": str(e)})
                continue
            captures = self.payload.answers(model, e.id)
            if captures is None:
                missing.append((i, e))
            else:
                self._apply(model, cfg, e, captures, outcome, i)
        self._charge(started)
        if missing:
            await self._from_segments(model, cfg, missing, outcome)
        for name, items in outcome.items():
            if items:
                self.book.count(model, name, len(items))
        if not batch:
            _raise_single(model, outcome)
        return {name: len(items) for name, items in outcome.items()} | {
            f"{name}_ids": items[:SHOWN] for name, items in outcome.items()
            if items and name != "accepted"}

    async def _from_segments(self, model: str, cfg: ModelConfig,
                             missing: list[tuple[int, Item]],
                             outcome: dict[str, list[Any]]) -> None:
        roots = self.payload.sink_roots(model, cfg)
        found: dict[str, list[Answer]] = {}
        if roots:
            async with self._searching:
                found = await asyncio.to_thread(find_logged, roots, model,
                                                {e.id for _, e in missing})
        started = time.perf_counter()
        for n, (i, e) in enumerate(missing):
            if n and n % SLICE == 0:
                started = await self._pause(started)
            captures = found.get(e.id)
            if captures is None:
                outcome["unknown"].append(e.id)
            else:
                self._apply(model, cfg, e, captures, outcome, i)
        self._charge(started)

    async def _pause(self, started: float) -> float:
        """Charge the loop time since `started`, let inference run a turn, restart the clock."""
        self._charge(started)
        await asyncio.sleep(0)
        return time.perf_counter()

    def _apply(self, model: str, cfg: ModelConfig, e: Item, captures: Sequence[Answer],
               outcome: dict[str, list[Any]], index: int) -> None:
        if self.book.is_duplicate(model, e.id):
            outcome["duplicate"].append(e.id)
            return
        labels = self.labels(model, captures[0].version)
        why = self.book.apply(e, captures, labels, time.time(), cfg.logging.quality_window)
        if why is None:
            outcome["accepted"].append(e.id)
        else:
            outcome["invalid"].append({"index": index, "error": why})


def _raise_single(model: str, outcome: dict[str, list[Any]]) -> None:
    if outcome["invalid"]:
        raise BadRequest(str(outcome["invalid"][0]["error"]))
    if outcome["unknown"]:
        raise NotFound(f"model {model!r} has no logged prediction with id "
                       f"{outcome['unknown'][0]!r} (only logged requests can get feedback: "
                       "see [logging] sample)")
    if outcome["duplicate"]:
        raise Conflict(f"request {outcome['duplicate'][0]!r} already has feedback")
