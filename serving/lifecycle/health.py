"""Readiness that means "send me traffic": models loaded, queues not saturated, not draining.

A load balancer reads `/v2/health/ready`; it should stop sending here while this replica can only
queue more work, and while it shuts down. Saturation is judged from samples of every version's
queue depth against its bound, taken on the event loop a few times per `sustain_s`: the replica
turns unready once some queue has stayed past `fraction` of its bound for `sustain_s`, and ready
again once every queue has stayed below it for as long (so it does not flap on one burst).
"""

from __future__ import annotations

import asyncio
import logging
import time

from serving.lifecycle.manager import ModelManager

log = logging.getLogger("serving.health")


class Readiness:
    def __init__(
        self, manager: ModelManager, strict: bool, fraction: float, sustain_s: float
    ) -> None:
        self.manager = manager
        self.strict = strict
        self.fraction = fraction
        self.sustain_s = sustain_s
        self.draining = False
        self.saturated = False
        self._since: float | None = None  # when the current over/under streak began
        self._worst = ""

    def check(self) -> tuple[bool, str]:
        """(ready, why not)."""
        if self.draining:
            return False, "draining: shutting down"
        if self.saturated:
            return False, f"saturated: {self._worst}"
        why = self.manager.not_ready_reason(self.strict)
        return not why, why

    def sample(self, now: float | None = None) -> None:
        """One look at the queues; flips `saturated` once a streak has lasted `sustain_s`."""
        if self.fraction <= 0:
            return
        now = time.monotonic() if now is None else now
        over, worst = False, ""
        for model in list(self.manager.models.values()):
            for mv in list(model.versions.values()):
                sched = mv.scheduler
                if sched is None:
                    continue
                bound = sched.policy.max_queue_size
                if sched.queued >= self.fraction * bound:
                    over = True
                    worst = f"model {mv.label} has {sched.queued}/{bound} requests queued"
        if over != self.saturated:  # a streak towards flipping
            if self._since is None:
                self._since = now
            if now - self._since >= self.sustain_s:
                self.saturated = over
                self._since = None
                if over:
                    self._worst = worst
                    log.warning("not ready: saturated (%s for %.1f s)", worst, self.sustain_s)
                else:
                    log.info("ready again: queues below %.0f%% of their bounds",
                             self.fraction * 100)
        else:
            self._since = None
            if over:
                self._worst = worst

    async def watch(self) -> None:
        """Sample until cancelled (a lifespan task)."""
        if self.fraction <= 0:
            return
        period = min(0.1, max(self.sustain_s / 5, 0.01))
        while True:
            await asyncio.sleep(period)
            self.sample()
