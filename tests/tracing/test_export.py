"""Tracer and SpanBuilder with the SDK's in-memory exporter: which requests get a trace, and the
spans an answered one becomes (parents, links, attributes, times)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from serving.tracing.export import build_tracer, check
from serving.tracing.request import RequestTrace, Tracer

TRACE_ID, SPAN_ID = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
PARENT = f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"


@dataclass
class Item:
    """What the scheduler's queued item shows the tracer."""

    trace: RequestTrace | None
    enqueued_at: float


@dataclass
class Served:
    decode_s: float
    encode_s: float


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def tracer_for(exported: InMemorySpanExporter, **env: str) -> Tracer:
    return build_tracer(env, SimpleSpanProcessor(exported))


def by_name(spans: Any) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


@pytest.mark.parametrize("carrier", [
    pytest.param([(b"host", b"h"), (b"traceparent", PARENT.encode()), (b"tracestate", b"a=1")],
                 id="asgi-headers"),
    pytest.param((("traceparent", PARENT), ("tracestate", "a=1")), id="grpc-metadata"),
    pytest.param({"traceparent": PARENT, "tracestate": "a=1"}, id="mapping"),
])
def test_the_carriers_traceparent_is_the_parent(
    exported: InMemorySpanExporter, carrier: Any
) -> None:
    trace = tracer_for(exported).start_request(carrier, "iris", None, "http")
    assert trace is not None and trace.trace_id == TRACE_ID
    assert trace.parent is not None and trace.parent.span_id == SPAN_ID
    assert trace.parent.tracestate == "a=1"


def test_sampling_follows_the_parent_then_the_ratio(exported: InMemorySpanExporter) -> None:
    never = tracer_for(exported, OTEL_TRACES_SAMPLER="parentbased_traceidratio",
                       OTEL_TRACES_SAMPLER_ARG="0")
    assert never.start_request([], "iris", None, "http") is None  # a root: the ratio, 0
    assert never.start_request({"traceparent": PARENT}, "iris", None, "http") is not None
    unsampled = PARENT[:-2] + "00"
    always = tracer_for(exported)  # parentbased_always_on
    assert always.start_request({"traceparent": unsampled}, "iris", None, "http") is None
    assert always.start_request({"traceparent": "garbage"}, "iris", None, "http") is not None


def test_an_answered_request_becomes_a_server_span_with_its_phases(
    exported: InMemorySpanExporter,
) -> None:
    tracer = tracer_for(exported)
    trace = tracer.start_request({"traceparent": PARENT, "tracestate": "a=1"}, "iris", "1",
                                 "http")
    assert trace is not None
    time.sleep(0.001)  # reading the body, then decoding it (0.5 ms, below)
    enqueued = time.monotonic()
    untraced = Item(None, enqueued)
    tracer.batch_ran([Item(trace, enqueued), untraced], "iris:1", 3, enqueued + 0.001, None)
    time.sleep(0.002)  # the encode span ends when end() is called: leave room before it
    trace.end("POST /v2/models/{model}/infer", {"http.response.status_code": 200},
              Served(decode_s=0.0005, encode_s=0.0002))
    spans = by_name(exported.get_finished_spans())
    assert set(spans) == {"POST /v2/models/{model}/infer", "decode", "queue", "inference",
                          "encode", "batch"}
    root = spans["POST /v2/models/{model}/infer"]
    assert root.kind is SpanKind.SERVER and root.parent is not None
    assert (root.parent.trace_id, root.parent.span_id, root.parent.is_remote) == (
        TRACE_ID, SPAN_ID, True)
    assert root.context.trace_id == TRACE_ID and root.context.span_id == trace.span_id
    assert root.context.trace_state.to_header() == "a=1"
    assert root.attributes == {"http.response.status_code": 200}
    assert root.status.status_code is StatusCode.UNSET
    phases = [spans[n] for n in ("decode", "queue", "inference", "encode")]
    for child in phases:
        assert child.parent == root.context and child.kind is SpanKind.INTERNAL
        assert child.context.trace_state == root.context.trace_state  # as SDK children do
        assert root.start_time <= child.start_time <= child.end_time <= root.end_time
    assert [c.end_time - c.start_time for c in (phases[0], phases[3])] == pytest.approx(
        [500_000, 200_000], abs=2)
    assert phases[1].end_time - phases[1].start_time == pytest.approx(1_000_000, abs=2)
    inference, batch = spans["inference"], spans["batch"]
    assert inference.attributes == {"serving.batch.size": 3}
    assert [link.context for link in inference.links] == [batch.context]
    assert batch.parent is None and batch.context.trace_id != TRACE_ID
    assert batch.attributes == {"serving.model.name": "iris", "serving.model.version": "1",
                                "serving.batch.size": 3, "serving.batch.requests": 2}
    assert [(link.context.trace_id, link.context.span_id) for link in batch.links] == [
        (TRACE_ID, trace.span_id)]


def test_one_batch_span_links_every_sampled_request_in_it(
    exported: InMemorySpanExporter,
) -> None:
    tracer = tracer_for(exported)
    traces = [tracer.start_request([], "iris", None, "http") for _ in range(3)]
    now = time.monotonic()
    tracer.batch_ran([Item(t, now) for t in traces], "iris:2", 3, now, None)
    for t in traces:
        assert t is not None
        t.end("POST /v2/models/{model}/infer", {}, Served(0.0, 0.0))
    spans = exported.get_finished_spans()
    [batch] = [s for s in spans if s.name == "batch"]
    links = {(link.context.trace_id, link.context.span_id) for link in batch.links}
    assert links == {(t.trace_id, t.span_id) for t in traces if t is not None}
    inferences = [s for s in spans if s.name == "inference"]
    assert len(inferences) == 3
    assert all([lk.context for lk in s.links] == [batch.context] for s in inferences)


def test_failures_mark_the_spans(exported: InMemorySpanExporter) -> None:
    tracer = tracer_for(exported)
    failed_batch = tracer.start_request([], "iris", None, "http")
    refused = tracer.start_request([], "iris", None, "http")
    assert failed_batch is not None and refused is not None
    now = time.monotonic()
    tracer.batch_ran([Item(failed_batch, now)], "iris:1", 1, now,
                     RuntimeError("model iris:1 failed to run"))
    failed_batch.end("POST /v2/models/{model}/infer", {}, None, "model iris:1 failed to run")
    refused.end("POST /v2/models/{model}/infer", {}, None, "queue is full")
    spans = exported.get_finished_spans()
    assert sorted(s.name for s in spans) == [
        "POST /v2/models/{model}/infer", "POST /v2/models/{model}/infer", "batch", "inference",
        "queue"]  # no decode or encode without the answer's timings
    for s in spans:  # the wait in the queue went as waits go
        expected = StatusCode.UNSET if s.name == "queue" else StatusCode.ERROR
        assert s.status.status_code is expected, s.name
    failed = {s.status.description for s in spans if s.name != "queue"}
    assert failed == {"model iris:1 failed to run", "queue is full"}


@pytest.mark.parametrize("env, message", [
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER='zipkin' is not supported"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTLP protocol 'http/json' is not supported"),
    ({"OTEL_TRACES_SAMPLER": "xray"}, "OTEL_TRACES_SAMPLER='xray' is not supported"),
])
def test_settings_the_server_cannot_honour_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check(env)


def test_supported_settings_pass() -> None:
    check({})
    check({"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "always_off"})
    check({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"})
