"""ServerConfig: the server's settings, a frozen dataclass validated once.

They come from flags, then `SERVING_*` environment variables, then an optional TOML file
(`--config`, its `[server]` table), then defaults: the first that sets a value wins. A model's
own settings (`<registry>/<model>/model.toml`) are `serving.model_config`.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from serving.model_config import parse_bool


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


@dataclass(frozen=True)
class ServerConfig:
    """Everything `serving serve` can be told. `help` metadata doubles as `--help` text."""

    registry: str = field(
        default="models", metadata={"help": "registry directory, or s3://bucket/prefix"}
    )
    registry_cache: str = field(
        default="",
        metadata={"help": "local cache an s3:// registry is synced into (empty: "
                          "$XDG_CACHE_HOME/serving/s3/<bucket>/<prefix>)"},
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8000, metadata={"help": "TCP port (0 picks a free one)"})
    grpc_port: int = field(
        default=8001, metadata={"help": "gRPC port (Open Inference Protocol; 0: no gRPC)"}
    )
    grpc_max_message_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata={"help": "largest gRPC message received or sent (RESOURCE_EXHAUSTED above)"},
    )
    admin_token: str = field(
        default="",
        metadata={"help": "bearer token that model control and rollout changes require "
                          "(empty: they answer 403 unless --admin-open)"},
    )
    admin_open: bool = field(
        default=False,
        metadata={"help": "without an admin token, let anyone who reaches the port load and "
                          "unload models and change rollouts (a trusted setup only; refused on "
                          "a non-loopback --host)"},
    )
    max_body_bytes: int = field(
        default=64 * 1024 * 1024, metadata={"help": "largest request body accepted (413 above)"}
    )
    strict_readiness: bool = field(
        default=True,
        metadata={"help": "ready only when every model that should load is ready (as Triton)"},
    )
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})
    intra_op_threads: int = field(
        default=1, metadata={"help": "default ONNX Runtime intra-op threads per session"}
    )
    ready_file: str = field(
        default="", metadata={"help": "write 'host port' here once listening (for scripts)"}
    )
    poll: float = field(
        default=0.0,
        metadata={"help": "seconds between registry polls that load, reload and unload (0: off)"},
    )
    switch_interval_us: int = field(
        default=250,
        metadata={"help": "Python's GIL switch interval: bounds how long a finished inference "
                          "thread waits for the event loop (Python's default: 5000)"},
    )
    access_log: bool = field(
        default=False,
        metadata={"help": "one JSON line per inference request on the serving.access logger"},
    )
    tracing: bool = field(
        default=False,
        metadata={"help": "OpenTelemetry traces of inference requests, set up by the standard "
                          "OTEL_* variables (OTLP exporter, sampler); needs the otel extra"},
    )
    routing_header: str = field(
        default="x-routing-key",
        metadata={"help": "header whose value picks canary or primary (else the V2 request id)"},
    )
    rollout_controller: bool = field(
        default=True,
        metadata={"help": "run rollouts here while this replica holds the controller lease"},
    )
    rollout_metrics: str = field(default="local", metadata={
        "help": "judge rollout steps on 'local' counters or 'prometheus' (every replica's)"})
    prometheus_url: str = field(default="", metadata={"help": "Prometheus's URL (http://...)"})
    advertise_url: str = field(default="", metadata={
        "help": "this replica's URL: others forward rollout requests to it here"})
    controller_lease: float = field(default=15.0, metadata={
        "help": "seconds the rollout controller's lease lives unrenewed (a dead holder's wait)"})
    build_examples: bool = field(
        default=False,
        metadata={"help": "build the example models into the registry if it has none"},
    )
    workers: str = field(
        default="1",
        metadata={"help": "worker processes sharing the port (SO_REUSEPORT), each with its own "
                          "models and batchers; 'auto': one per CPU this process may use"},
    )
    drain_grace: float = field(
        default=5.0,
        metadata={"help": "seconds to keep serving after SIGTERM with readiness false, before "
                          "in-flight requests finish and the process exits 0"},
    )
    header_timeout: float = field(
        default=10.0,
        metadata={"help": "seconds a client has to send a request's headers (from connecting, "
                          "or from a kept-alive request's first byte): else 408 and close"},
    )
    body_timeout: float = field(
        default=30.0,
        metadata={"help": "longest gap in seconds between two reads of a request body: "
                          "else 408 and close"},
    )
    max_connections: int = field(
        default=4096,
        metadata={"help": "open connections per worker process; a request on one more gets a "
                          "fast 503 and the connection closes (0: no cap)"},
    )
    saturation_fraction: float = field(
        default=0.8,
        metadata={"help": "readiness turns false while a model's queue stays past this fraction "
                          "of its max_queue_size (0: never)"},
    )
    saturation_seconds: float = field(
        default=1.0,
        metadata={"help": "how long a queue must stay past (or below) the fraction before "
                          "readiness flips"},
    )
    payload_log: str = field(default="", metadata={"help": "logged requests' sink for every "
        "model, over model.toml's [logging] sink: a directory, s3://bucket/prefix or http(s)://"})
    payload_sample: float = field(default=-1.0, metadata={"help": "share of requests every model "
        "logs, over model.toml's [logging] sample (negative: model.toml decides)"})
    payload_buffer: int = field(default=10_000, metadata={"help": "records waiting for the "
        "payload writer; past this the oldest are dropped"})
    payload_buffer_bytes: int = field(default=256 * 1024 * 1024, metadata={"help": "bytes of "
        "tensors the records waiting for the payload writer may hold (strings: 64 bytes an "
        "element); past this the oldest are dropped"})

    def __post_init__(self) -> None:
        problems = [message for failed, message in (
            (not 0 <= self.port <= 65535, f"port must be 0..65535, got {self.port}"),
            (self.max_body_bytes < 1024, "max_body_bytes must be at least 1024"),
            (not 0 <= self.grpc_port <= 65535, f"grpc_port must be 0..65535, got {self.grpc_port}"),
            (self.grpc_port and self.grpc_port == self.port, "grpc_port must differ from port"),
            (not 1024 <= self.grpc_max_message_bytes < 2**31,
             "grpc_max_message_bytes must be 1024..2147483647"),
            (self.log_level not in ("debug", "info", "warning", "error"),
             f"log_level must be debug, info, warning or error: {self.log_level}"),
            (not 10 <= self.switch_interval_us <= 100_000,
             "switch_interval_us must be 10..100000"),
            (self.poll < 0, "poll must be >= 0 seconds"),
            (self.worker_count() < 1, "workers must be a positive integer or 'auto'"),
            (self.drain_grace < 0, "drain_grace must be >= 0 seconds"),
            (not 0.0 <= self.saturation_fraction <= 1.0,
             "saturation_fraction must be 0..1 (0: never saturated)"),
            (self.saturation_seconds < 0, "saturation_seconds must be >= 0"),
            (self.intra_op_threads < 0,
             "intra_op_threads must be >= 0 (0: ONNX Runtime decides)"),
            (self.header_timeout <= 0 or self.body_timeout <= 0,
             "header_timeout and body_timeout must be > 0 seconds"),
            (self.max_connections < 0, "max_connections must be >= 0 (0: no cap)"),
            (self.rollout_metrics not in ("local", "prometheus"),
             "rollout_metrics must be 'local' or 'prometheus'"),
            (self.rollout_metrics == "prometheus"
             and not self.prometheus_url.startswith(("http://", "https://")),
             "--rollout-metrics prometheus needs --prometheus-url http(s)://..."),
            (self.controller_lease < 1, "controller_lease must be >= 1 second"),
            (self.payload_sample > 1.0, "payload_sample must be at most 1 (negative: unset)"),
            (self.payload_buffer < 1, "payload_buffer must be >= 1"),
            (self.payload_buffer_bytes < 1, "payload_buffer_bytes must be >= 1"),
            (self.admin_open and not self.admin_token and not is_loopback(self.host),
             f"--admin-open without an admin token on {self.host}, which other machines can "
             "reach: set --admin-token (or SERVING_ADMIN_TOKEN), or listen on 127.0.0.1"),
        ) if failed]
        if problems:
            raise ValueError(problems[0])

    def worker_count(self) -> int:
        """--workers as a number: 'auto' is the CPUs this process may run on."""
        text = str(self.workers).strip().lower()
        if text == "auto":
            return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
                os.cpu_count() or 1)
        if not text.isdigit():
            raise ValueError(f"workers must be a positive integer or 'auto', got {self.workers!r}")
        return int(text)


def _coerce(kind: Any, value: Any) -> Any:
    if kind in (bool, "bool"):
        return parse_bool(value)
    if kind in (float, "float"):
        return float(value)
    if kind in (int, "int"):
        return int(value)
    return str(value)


def load_server_config(
    flags: dict[str, Any], env: dict[str, str] | None = None, config_file: str | None = None
) -> ServerConfig:
    """Merge flags > SERVING_* env > TOML `[server]` > defaults into a validated ServerConfig."""
    environ: Mapping[str, str] = os.environ if env is None else env
    file_values: dict[str, Any] = {}
    config_file = config_file or environ.get("SERVING_CONFIG") or None
    if config_file:
        with open(config_file, "rb") as f:
            doc = tomllib.load(f)
        file_values = dict(doc.get("server", doc))
    values: dict[str, Any] = {}
    names = {f.name: f.type for f in fields(ServerConfig)}
    unknown = set(file_values) - set(names)
    if unknown:
        raise ValueError(f"unknown settings in {config_file}: {', '.join(sorted(unknown))}")
    for name, kind in names.items():
        if flags.get(name) is not None:
            values[name] = _coerce(kind, flags[name])
        elif f"SERVING_{name.upper()}" in environ:
            values[name] = _coerce(kind, environ[f"SERVING_{name.upper()}"])
        elif name in file_values:
            values[name] = _coerce(kind, file_values[name])
    return ServerConfig(**values)
