"""A sampled request's record: stamped as it passes, turned into spans once it is answered.

Nothing here imports OpenTelemetry. A request that is not sampled never gets a RequestTrace
(`Tracer.start_request` returns None), so the rest of the path carries a None it never looks at;
the scheduler looks once per batch for the sampled requests in it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from random import getrandbits
from time import perf_counter, time_ns
from typing import Protocol

from serving.tracing.context import Parent, Sampler, parent_flags, parse_traceparent

AttrValue = str | bool | int | float
Attributes = dict[str, AttrValue]
# W3C trace context arrives as HTTP headers (ASGI: lower-case bytes) or gRPC metadata (str).
Carrier = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]
_FIELDS = frozenset((b"traceparent", "traceparent", b"tracestate", "tracestate"))


class Phases(Protocol):
    """What the data plane's `Served` record tells about an answered request."""

    @property
    def decode_s(self) -> float: ...
    @property
    def encode_s(self) -> float: ...


class Queued(Protocol):
    """What the scheduler's queued item holds for tracing."""

    @property
    def trace(self) -> RequestTrace | None: ...
    @property
    def enqueued_at(self) -> float: ...


class Exporter(Protocol):
    """Builds and exports the spans of answered requests (serving/tracing/export.py)."""

    def request(
        self, trace: RequestTrace, name: str, attributes: Attributes, served: Phases | None,
        error: str | None, ended: float,
    ) -> None: ...


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _context_fields(carrier: Carrier) -> tuple[str | None, str | None]:
    """The carrier's traceparent (the first) and tracestate (all, joined)."""
    if type(carrier) is not list and isinstance(carrier, Mapping):  # ASGI's list: no ABC check
        return carrier.get("traceparent"), carrier.get("tracestate")
    parent: str | None = None
    states: list[str] = []
    for key, value in carrier:
        if key in _FIELDS:  # one set lookup per header for the common, context-free request
            if _text(key) == "traceparent":
                if parent is None:
                    parent = _text(value)
            else:
                states.append(_text(value))
    return parent, ",".join(states) if states else None


class BatchTrace:
    """One batch that held sampled requests: its own span, linked from theirs."""

    __slots__ = (
        "emitted", "ended", "error", "label", "members", "requests", "rows", "span_id",
        "started", "trace_id",
    )

    def __init__(
        self, label: str, rows: int, requests: int, started: float, ended: float,
        error: str | None,
    ) -> None:
        self.trace_id = getrandbits(128) or 1
        self.span_id = getrandbits(64) or 1
        self.label = label  # "model:version"
        self.rows = rows
        self.requests = requests
        self.started = started  # time.monotonic(), as the scheduler keeps time
        self.ended = ended
        self.error = error
        self.members: list[RequestTrace] = []
        self.emitted = False  # its span goes out with the first member's


class RequestTrace:
    """A sampled request: its trace ids, its parent and when its phases happened."""

    __slots__ = (
        "batch", "enqueued", "exporter", "model", "mono", "parent", "perf", "protocol",
        "span_id", "start_ns", "trace_id", "version",
    )

    def __init__(
        self, exporter: Exporter, trace_id: int, parent: Parent | None, model: str,
        version: str | None, protocol: str,
    ) -> None:
        self.exporter = exporter
        self.trace_id = trace_id
        self.span_id = getrandbits(64) or 1
        self.parent = parent
        self.model = model
        self.version = version  # as addressed (None: the model's routing chose)
        self.protocol = protocol
        # one instant on each clock: the scheduler keeps monotonic time, the data plane
        # perf_counter time, spans wall-clock nanoseconds
        self.start_ns = time_ns()
        self.perf = perf_counter()
        self.mono = time.monotonic()
        self.enqueued = 0.0  # monotonic; set with `batch` when its batch has run
        self.batch: BatchTrace | None = None

    def end(
        self, name: str, attributes: Attributes, served: Phases | None = None,
        error: str | None = None,
    ) -> None:
        """The request was answered: export its span (named `name`, with `attributes`), its
        phases' child spans when `served` says how long they took, and its batch's span.
        `error`: the span's status is ERROR with this description."""
        self.exporter.request(self, name, attributes, served, error, perf_counter())


class Tracer:
    """Decides which requests are sampled, and collects the batches they ran in."""

    def __init__(self, sampler: Sampler, exporter: Exporter, shutdown: Callable[[], None]) -> None:
        self.sampler = sampler
        self.bound = sampler.bound
        self.exporter = exporter
        self.shutdown = shutdown  # flush what is buffered and stop exporting

    def start_request(
        self, carrier: Carrier, model: str, version: str | None, protocol: str
    ) -> RequestTrace | None:
        """A RequestTrace when this request is sampled (the carrier's W3C `traceparent`, if
        any, is its parent), else None. `protocol`: "http" or "grpc"."""
        if type(carrier) is list:  # ASGI's headers: the common request has no trace context
            for key, _ in carrier:
                if key in _FIELDS:
                    return self._with_context(carrier, model, version, protocol)
            # a root: the ratio decides on the new trace id's low 64 bits
            low = getrandbits(64)
            return None if low >= self.bound else self._root(low, model, version, protocol)
        return self._with_context(carrier, model, version, protocol)

    def _root(
        self, low: int, model: str, version: str | None, protocol: str
    ) -> RequestTrace | None:
        """A sampled request without a parent, its trace id ending in `low`."""
        trace_id = (getrandbits(64) << 64 | low) or 1
        return RequestTrace(self.exporter, trace_id, None, model, version, protocol)

    def _with_context(
        self, carrier: Carrier, model: str, version: str | None, protocol: str
    ) -> RequestTrace | None:
        traceparent, tracestate = _context_fields(carrier)
        if not traceparent:
            low = getrandbits(64)
            return None if low >= self.bound else self._root(low, model, version, protocol)
        sampler = self.sampler
        if sampler.parent_based:  # the caller's flag decides: read only the flag first
            flags = parent_flags(traceparent)
            if flags is not None and not flags & 1:
                return None
        parent = parse_traceparent(traceparent, tracestate)
        trace_id = parent.trace_id if parent is not None else (getrandbits(128) or 1)
        if not sampler.sampled(trace_id, parent):
            return None
        return RequestTrace(self.exporter, trace_id, parent, model, version, protocol)

    def batch_ran(
        self, items: Sequence[Queued], label: str, rows: int, started: float,
        error: Exception | None,
    ) -> None:
        """A batch has run (on the loop, as its results are handed out): stamp its sampled
        requests with it. Costs a look at each request; builds nothing when none is sampled."""
        batch: BatchTrace | None = None
        for item in items:
            trace = item.trace
            if trace is None:
                continue
            if batch is None:
                batch = BatchTrace(label, rows, len(items), started, time.monotonic(),
                                   None if error is None else str(error))
            trace.enqueued = item.enqueued_at
            trace.batch = batch
            batch.members.append(trace)
