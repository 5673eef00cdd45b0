"""The dynamic batcher's policy: pure decisions over plain numbers (Triton's names and meaning)."""

from __future__ import annotations

from dataclasses import dataclass

from serving.model_config import BatchingConfig


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When a free worker should take what is queued, and how much of it."""

    max_batch_size: int = 64
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    max_queue_size: int = 1024
    default_timeout_us: int = 0
    workers: int = 1
    inline_max_us: int = 250
    max_request_rows: int = 0  # batching on: a request may carry at most max_batch_size rows
    # Inline runs stop for the loop turn once they have taken this long, so that one model's
    # backlog of cheap batches cannot hold every other connection waiting.
    inline_turn_us: int = 2_000

    @classmethod
    def from_config(cls, cfg: BatchingConfig, batched: bool) -> BatchPolicy:
        """A model without a batch dimension (or with batching off) runs one request at a time."""
        if not (cfg.enabled and batched):
            return cls(
                max_batch_size=1, max_queue_size=cfg.max_queue_size,
                default_timeout_us=cfg.default_timeout_us, workers=cfg.workers,
                inline_max_us=cfg.inline_max_us,
            )
        return cls(
            max_batch_size=cfg.max_batch_size,
            preferred_batch_sizes=tuple(sorted(cfg.preferred_batch_sizes)),
            max_queue_delay_us=cfg.max_queue_delay_us,
            max_queue_size=cfg.max_queue_size,
            default_timeout_us=cfg.default_timeout_us,
            workers=cfg.workers,
            inline_max_us=cfg.inline_max_us,
            max_request_rows=cfg.max_batch_size,
        )

    def should_wait(self, queued_rows: int, oldest_at: float, now: float) -> float:
        """Seconds a free worker should still wait for company; 0.0 means take the batch now.

        With a delay of 0 it never waits. Otherwise it waits only while the delay has not passed
        and waiting can still reach a preferred size (or max_batch_size when none are given).
        """
        if self.max_queue_delay_us <= 0 or queued_rows >= self.max_batch_size:
            return 0.0
        if queued_rows in self.preferred_batch_sizes:
            return 0.0
        targets = self.preferred_batch_sizes or (self.max_batch_size,)
        if not any(t > queued_rows for t in targets):
            return 0.0
        left = self.max_queue_delay_us * 1e-6 - (now - oldest_at)
        return left if left > 0 else 0.0

    def deadline(self, now: float, timeout_us: int | None) -> float:
        """Absolute deadline (monotonic seconds) or 0.0 for none; a request only shortens it."""
        limit = self.default_timeout_us
        if timeout_us is not None and timeout_us > 0:
            limit = timeout_us if limit <= 0 else min(limit, timeout_us)
        return now + limit * 1e-6 if limit > 0 else 0.0
