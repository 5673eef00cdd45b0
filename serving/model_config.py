"""ModelConfig: a model's settings from `<registry>/<model>/model.toml`, frozen dataclasses
validated once (Triton's dynamic batcher names where they exist)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.logging_config import LoggingConfig

_OPT_LEVELS = ("disable", "basic", "extended", "all")


def parse_bool(value: Any) -> bool:
    """A TOML, flag or environment value as a boolean (true/false, 1/0, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")



@dataclass(frozen=True)
class BatchingConfig:
    """The `[batching]` table of model.toml; Triton's dynamic batcher names and meaning."""

    enabled: bool = True
    max_batch_size: int = 64
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 1024
    default_timeout_us: int = 0  # 0: no deadline
    workers: int = 1  # inference threads sharing the session
    # Batches whose measured run time is at most this run on the event loop itself: for
    # microsecond models a thread hand-off costs more than the run. 0: always a worker thread.
    inline_max_us: int = 250

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("batching.max_batch_size must be >= 1")
        if self.max_queue_delay_us < 0 or self.default_timeout_us < 0:
            raise ValueError("batching delays and timeouts must be >= 0")
        if self.max_queue_size < 1:
            raise ValueError("batching.max_queue_size must be >= 1")
        if not 0 <= self.inline_max_us <= 10_000:
            raise ValueError("batching.inline_max_us must be 0..10000")
        if not 1 <= self.workers <= 64:
            raise ValueError("batching.workers must be 1..64")
        if any(not 1 <= s <= self.max_batch_size for s in self.preferred_batch_sizes):
            raise ValueError("batching.preferred_batch_sizes must lie in 1..max_batch_size")


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions load: Triton's latest N, all, or specific."""

    kind: str = "latest"
    latest: int = 1
    versions: tuple[int, ...] = ()
    # A retired version stops taking requests and finishes those it holds; past this it is
    # closed anyway (a stuck run must not keep it, or the registry poll, waiting forever).
    drain_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in ("latest", "all", "specific"):
            raise ValueError("versions.policy must be latest, all or specific")
        if self.kind == "latest" and self.latest < 1:
            raise ValueError("versions.latest must be >= 1")
        if not self.drain_timeout_s > 0:
            raise ValueError("versions.drain_timeout_s must be > 0")

    def select(self, available: list[int]) -> list[int]:
        """The versions to load out of those published (ascending)."""
        if self.kind == "all":
            return list(available)
        if self.kind == "specific":
            return [v for v in available if v in self.versions]
        return list(available[-self.latest :])


@dataclass(frozen=True)
class RuntimeConfig:
    """The `[runtime]` table: ONNX Runtime session options."""

    intra_op_threads: int | None = None  # None: the server's default
    inter_op_threads: int = 1
    graph_optimization_level: str = "all"
    providers: tuple[str, ...] = ()  # empty: CUDA first when available, else CPU

    def __post_init__(self) -> None:
        if self.graph_optimization_level not in _OPT_LEVELS:
            raise ValueError(f"runtime.graph_optimization_level must be one of {_OPT_LEVELS}")


@dataclass(frozen=True)
class MonitoringConfig:
    """The `[monitoring]` table: drift and data quality against the manifest's reference."""

    drift: bool = True
    window_rows: int = 10_000
    sample: float = 1.0  # share of batches accounted
    psi_threshold: float = 0.2
    max_rows_per_batch: int = 8  # bigger batches are sampled (strided) down to this
    # Fewer rows than this in the window (or than window_rows, if smaller): "not enough data",
    # never drifted (a PSI over a handful of rows is noise: 5 rows gave 5-7).
    min_rows: int = 1_000

    def __post_init__(self) -> None:
        if self.window_rows < 1:
            raise ValueError("monitoring.window_rows must be >= 1")
        if not 0.0 < self.sample <= 1.0:
            raise ValueError("monitoring.sample must be in (0, 1]")
        if self.psi_threshold <= 0:
            raise ValueError("monitoring.psi_threshold must be > 0")
        if self.max_rows_per_batch < 1:
            raise ValueError("monitoring.max_rows_per_batch must be >= 1")
        if self.min_rows < 1:
            raise ValueError("monitoring.min_rows must be >= 1")


@dataclass(frozen=True)
class ModelConfig:
    """A model's serving configuration (`model.toml`)."""

    batching: BatchingConfig = BatchingConfig()
    versions: VersionPolicy = VersionPolicy()
    runtime: RuntimeConfig = RuntimeConfig()
    allow_nonfinite: bool = False  # reject NaN/Infinity in float inputs unless set
    # true: the highest ready version is the primary (a new version takes traffic as soon as it
    # is ready). false: the primary is pinned in the registry's routing state and only a rollout
    # (or an operator) moves it.
    auto_promote: bool = True
    # `[inputs] reject_out_of_range`: refuse rows with NaN/Infinity or values outside the
    # reference data's range (per feature, from the manifest), with a 400 naming the feature.
    reject_out_of_range: bool = False
    monitoring: MonitoringConfig = MonitoringConfig()
    # `[routing] rollout_metrics`, `prometheus_url`: where this model's rollouts are judged
    rollout_metrics: tuple[tuple[str, str], ...] = ()
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @classmethod
    def from_toml(cls, doc: dict[str, Any]) -> ModelConfig:
        known = {"batching", "versions", "runtime", "inputs", "routing", "monitoring", "logging"}
        unknown = set(doc) - known
        if unknown:
            raise ValueError(f"unknown tables in model.toml: {', '.join(sorted(unknown))}")
        b = dict(doc.get("batching", {}))
        if "preferred_batch_sizes" in b:
            b["preferred_batch_sizes"] = tuple(int(x) for x in b["preferred_batch_sizes"])
        v = dict(doc.get("versions", {}))
        policy = VersionPolicy(
            kind=str(v.get("policy", "latest")),
            latest=int(v.get("latest", 1)),
            versions=tuple(int(x) for x in v.get("versions", ())),
            drain_timeout_s=float(v.get("drain_timeout_s", VersionPolicy.drain_timeout_s)),
        )
        r = dict(doc.get("runtime", {}))
        if "providers" in r:
            r["providers"] = tuple(str(p) for p in r["providers"])
        inputs = dict(doc.get("inputs", {}))
        routing = dict(doc.get("routing", {}))
        metrics = tuple((k, str(routing.pop(k))) for k in ("rollout_metrics", "prometheus_url")
                        if k in routing)
        logs = dict(doc.get("logging", {}))
        if "routing_keys" in logs:
            logs["routing_keys"] = tuple(str(k) for k in logs["routing_keys"])
        unknown = set(routing) - {"auto_promote"}
        if unknown:
            raise ValueError(f"unknown keys in [routing]: {', '.join(sorted(unknown))}")
        try:
            return cls(
                batching=BatchingConfig(**b),
                versions=policy,
                runtime=RuntimeConfig(**r),
                allow_nonfinite=parse_bool(inputs.get("allow_nonfinite", False)),
                auto_promote=parse_bool(routing.get("auto_promote", True)),
                reject_out_of_range=parse_bool(inputs.get("reject_out_of_range", False)),
                monitoring=MonitoringConfig(**dict(doc.get("monitoring", {}))),
                rollout_metrics=metrics,
                logging=LoggingConfig(**logs),
            )
        except TypeError as exc:  # an unknown key in a table
            raise ValueError(f"model.toml: {exc}") from None


def read_model_config(path: Path) -> ModelConfig:
    """Parse a model.toml (absent: defaults); ValueError names what is wrong."""
    if not path.is_file():
        return ModelConfig()
    try:
        with path.open("rb") as f:
            return ModelConfig.from_toml(tomllib.load(f))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path.name}: {exc}") from None
    except TypeError as exc:  # a value of the wrong type (`latest = [1]`, `max_batch_size = "x"`)
        raise ValueError(f"{path.name}: a setting has the wrong type ({exc})") from None
