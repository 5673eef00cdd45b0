"""The `[logging]` table of model.toml (its own module: config.py is near its size limit)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoggingConfig:
    """The `[logging]` table: which requests are logged with their answers, and where."""

    sample: float = 0.0  # share of requests logged
    routing_keys: tuple[str, ...] = ()  # ...and every request whose routing key is one of these
    sink: str = ""  # directory, s3://bucket/prefix or http(s):// URL; empty: --payload-log
    segment_records: int = 10_000  # a segment is closed at this many records...
    segment_s: float = 60.0  # ...or this many seconds after its first
    recent: int = 20_000  # logged predictions kept in memory for feedback to join
    quality_window: int = 1_000  # labelled rows per version and route in the live quality

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample <= 1.0:
            raise ValueError("logging.sample must be in [0, 1]")
        if min(self.segment_records, self.quality_window) < 1 or self.segment_s <= 0 or \
                self.recent < 0:
            raise ValueError("logging: segment_records, quality_window >= 1, segment_s > 0")
