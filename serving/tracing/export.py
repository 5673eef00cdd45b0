"""Tracing set up from the standard OTEL_* variables, and the spans of answered requests.

Imported only when tracing is on (it needs the `otel` extra). Spans are built after the
response is sent, with the times the request path already took, as the SDK's ReadableSpan
handed straight to a BatchSpanProcessor: going through a Tracer (context objects, the sampler
again, a mutable span) cost 14 us a span against 1.4 us, for spans whose ids and sampling are
already decided. The processor's thread encodes and sends them (OTLP over HTTP by default).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Mapping
from random import getrandbits

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from serving import __version__, tracing
from serving.tracing.context import Sampler
from serving.tracing.request import Attributes, BatchTrace, Phases, RequestTrace, Tracer

log = logging.getLogger("serving.tracing")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status(StatusCode.UNSET)
_EXPORTERS = ("otlp", "console")


def _bool(text: str | None) -> bool:
    return (text or "").strip().lower() == "true"


class SpanBuilder:
    """Turns answered RequestTraces into spans for one processor (the tracer's `exporter`)."""

    def __init__(self, processor: SpanProcessor, resource: Resource) -> None:
        self.processor = processor
        self.resource = resource
        self.scope = InstrumentationScope("serving", __version__)

    def _span(
        self, name: str, context: SpanContext, parent: SpanContext | None, start: int, end: int,
        attributes: Attributes | None = None, kind: SpanKind = SpanKind.INTERNAL,
        links: tuple[Link, ...] = (), error: str | None = None,
    ) -> None:
        status = _OK if error is None else Status(StatusCode.ERROR, error)
        self.processor.on_end(ReadableSpan(
            name, context, parent, self.resource, attributes, links=links, kind=kind,
            status=status, start_time=start, end_time=max(start, end),
            instrumentation_scope=self.scope,
        ))

    def request(
        self, trace: RequestTrace, name: str, attributes: Attributes, served: Phases | None,
        error: str | None, ended: float,
    ) -> None:
        """The request's SERVER span, its phases' child spans and (the first time one of its
        requests ends) its batch's span."""
        t0 = trace.start_ns

        def mono(t: float) -> int:
            return t0 + int((t - trace.mono) * 1e9)

        end = t0 + int((ended - trace.perf) * 1e9)
        parent = trace.parent
        state = None
        if parent is not None and parent.tracestate:
            state = TraceState.from_header([parent.tracestate])
        context = SpanContext(trace.trace_id, trace.span_id, False, _SAMPLED, state)
        remote = (SpanContext(parent.trace_id, parent.span_id, True, TraceFlags(parent.flags),
                              state) if parent is not None else None)
        self._span(name, context, remote, t0, end, attributes, SpanKind.SERVER, error=error)
        batch = trace.batch
        if batch is not None:
            enqueued, began = mono(trace.enqueued), mono(batch.started)
            if served is not None:
                # from the scheduler's stamp back by the measured time (never before the
                # request: the stamp and the data plane's clock reading are not one instant)
                self._span("decode", self._child(context), context,
                           max(t0, enqueued - int(served.decode_s * 1e9)), enqueued)
            self._span("queue", self._child(context), context, enqueued, began)
            self._span(
                "inference", self._child(context), context, began, mono(batch.ended),
                {"serving.batch.size": batch.rows},
                links=(Link(SpanContext(batch.trace_id, batch.span_id, False, _SAMPLED)),),
                error=batch.error,
            )
            if not batch.emitted:
                batch.emitted = True
                self._batch(batch, mono)
        if served is not None:
            # Encoding ends as the response is written, just before `ended`: placed there with
            # the duration the data plane measured.
            self._span("encode", self._child(context), context, end - int(served.encode_s * 1e9),
                       end)

    @staticmethod
    def _child(parent: SpanContext) -> SpanContext:
        return SpanContext(parent.trace_id, getrandbits(64) or 1, False, _SAMPLED,
                           parent.trace_state)

    def _batch(self, batch: BatchTrace, mono: Callable[[float], int]) -> None:
        model, _, version = batch.label.rpartition(":")
        links = tuple(
            Link(SpanContext(m.trace_id, m.span_id, False, _SAMPLED)) for m in batch.members
        )
        self._span(
            "batch", SpanContext(batch.trace_id, batch.span_id, False, _SAMPLED), None,
            mono(batch.started), mono(batch.ended),
            {"serving.model.name": model, "serving.model.version": version,
             "serving.batch.size": batch.rows, "serving.batch.requests": batch.requests},
            links=links, error=batch.error,
        )


def _exporter(env: Mapping[str, str]) -> SpanExporter:
    kind = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if kind == "console":
        return ConsoleSpanExporter()
    if kind != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={kind!r} is not supported; use otlp or console")
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
    modules = {"http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
               "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"}
    if protocol not in modules:
        raise ValueError(
            f"OTLP protocol {protocol!r} is not supported; use http/protobuf or grpc"
        )
    try:
        module = importlib.import_module(modules[protocol])
    except ImportError:
        package = "opentelemetry-exporter-otlp-proto-" + protocol.split("/")[0]
        raise ValueError(f"OTLP over {protocol} needs the {package} package") from None
    exporter: SpanExporter = module.OTLPSpanExporter()
    return exporter


class _Resource(Resource):
    """A Resource whose hash is computed once: the OTLP encoder groups spans by resource and
    hashes it for every span (a JSON dump each time, a quarter of a span's encoding)."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other)


def _resource() -> Resource:
    """OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, with service.name "serving" by default."""
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "serving"}))
    return _Resource(resource)


def build_tracer(env: Mapping[str, str], processor: SpanProcessor) -> Tracer:
    """A Tracer with the sampler the environment names, exporting through `processor`."""
    return Tracer(Sampler.from_env(env), SpanBuilder(processor, _resource()), processor.shutdown)


def check(env: Mapping[str, str] | None = None) -> None:
    """ValueError when the OTEL_* settings cannot be served (before any process starts)."""
    env = os.environ if env is None else env
    Sampler.from_env(env)
    _exporter(env)


def configure(env: Mapping[str, str] | None = None) -> Tracer | None:
    """Turn tracing on as the OTEL_* variables say and make it the process's tracer; None
    (tracing stays off) with OTEL_SDK_DISABLED=true."""
    env = os.environ if env is None else env
    if _bool(env.get("OTEL_SDK_DISABLED")):
        log.info("tracing requested, but OTEL_SDK_DISABLED=true: tracing is off")
        return None
    tracer = build_tracer(env, BatchSpanProcessor(_exporter(env)))
    tracing.activate(tracer)
    return tracer


def shutdown() -> None:
    """Export what is buffered and stop (at exit)."""
    tracer = tracing.active()
    tracing.activate(None)
    if tracer is not None:
        tracer.shutdown()
