"""The states a model version moves through, and the loaded version itself."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from serving.batching.scheduler import Scheduler
from serving.model_config import ModelConfig
from serving.monitoring.counters import BatchStats
from serving.monitoring.drift import DriftMonitor
from serving.registry.manifest import Manifest
from serving.runtime.session import Session


class State(enum.StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    DRAINING = "DRAINING"
    UNLOADED = "UNLOADED"
    FAILED = "FAILED"


@dataclass(eq=False)
class ModelVersion:
    """One version of a model and everything the server holds for it."""

    name: str
    version: int
    path: Path
    config: ModelConfig
    state: State = State.LOADING
    reason: str = ""
    manifest: Manifest | None = None
    session: Session | None = None
    scheduler: Scheduler | None = None
    load_seconds: float = 0.0
    monitor: DriftMonitor | None = None
    stats: BatchStats = field(default_factory=BatchStats)  # the Model's, outlives schedulers
    version_str: str = field(init=False)

    def __post_init__(self) -> None:
        self.version_str = str(self.version)

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"
