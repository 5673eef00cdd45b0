"""The traceparent parser and the sampler against OpenTelemetry's own, which they mirror."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import sampling
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from serving.tracing.context import SAMPLERS, Parent, Sampler, parent_flags, parse_traceparent

VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
hexdigit = st.sampled_from("0123456789abcdefABCDEF-")


def sdk_parent(header: str) -> tuple[int, int, int] | None:
    ctx = TraceContextTextMapPropagator().extract({"traceparent": header})
    sc = trace.get_current_span(ctx).get_span_context()
    return (sc.trace_id, sc.span_id, int(sc.trace_flags)) if sc.is_valid else None


def ours(header: str) -> tuple[int, int, int] | None:
    p = parse_traceparent(header)
    return None if p is None else (p.trace_id, p.span_id, p.flags)


def headers() -> st.SearchStrategy[str]:
    """Valid headers with random ids and versions, and single-character mutations of them."""
    def build(version: int, tid: int, sid: int, flags: int, tail: str) -> str:
        return f"{version:02x}-{tid:032x}-{sid:016x}-{flags:02x}{tail}"

    valid = st.builds(build, st.integers(0, 255), st.integers(0, 2**128 - 1),
                      st.integers(0, 2**64 - 1), st.integers(0, 255),
                      st.sampled_from(["", "-extra", " ", "\t", "\n", "-"]))
    return st.one_of(valid, valid.flatmap(lambda h: st.builds(
        lambda i, c: h[:i] + c + h[i + 1:], st.integers(0, len(h)), hexdigit)), st.text())


@given(headers())
@example(VALID)
@example("00-" + "0" * 32 + "-b7ad6b7169203331-01")
@example("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
@example("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future")
@example("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x")
@example(VALID + " " * 500)
@example("00-" + "0" * 32 + "-b7ad6b7169203331-00")
@example("00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01")
def test_traceparent_parsed_as_the_sdk_does(header: str) -> None:
    expected = sdk_parent(header)
    assert ours(header) == expected
    assert parent_flags(header) == (None if expected is None else expected[2])


def test_a_parent_carries_flags_and_tracestate() -> None:
    p = parse_traceparent(VALID, "a=1,b=2")
    assert p == Parent(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 1, "a=1,b=2")
    assert p.sampled
    assert not parse_traceparent(VALID[:-2] + "00").sampled  # type: ignore[union-attr]
    assert parse_traceparent(VALID, "x" * 513).tracestate is None  # type: ignore[union-attr]


def sdk_decision(name: str, arg: str, trace_id: int, parent: Parent | None) -> bool:
    s = sampling._KNOWN_SAMPLERS[name]  # the SDK's table of OTEL_TRACES_SAMPLER values
    sampler = s(float(arg)) if "traceidratio" in name else s
    ctx = None
    if parent is not None:
        sc = trace.SpanContext(parent.trace_id, parent.span_id, True,
                               trace.TraceFlags(parent.flags))
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(sc))
    result = sampler.should_sample(ctx, trace_id, "request")
    return result.decision.is_sampled()


@given(
    name=st.sampled_from(SAMPLERS),
    arg=st.sampled_from(["0", "0.01", "0.25", "0.5", "1", "1.0"]),
    trace_id=st.integers(1, 2**128 - 1),
    parent_flags=st.none() | st.integers(0, 255),
)
def test_sampling_decisions_are_the_sdks(
    name: str, arg: str, trace_id: int, parent_flags: int | None
) -> None:
    sampler = Sampler.from_env({"OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": arg})
    parent = None if parent_flags is None else Parent(trace_id, 7, parent_flags)
    assert sampler.sampled(trace_id, parent) == sdk_decision(name, arg, trace_id, parent)


def test_default_sampler_is_parentbased_always_on() -> None:
    assert Sampler.from_env({}) == Sampler(True, 2**64)
    assert Sampler.from_env({"OTEL_TRACES_SAMPLER": " TraceIdRatio "}) == Sampler(False, 2**64)


@pytest.mark.parametrize("env, message", [
    ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, "OTEL_TRACES_SAMPLER='jaeger_remote' is not"),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"}, "got 'x'"),
    ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
     "in [0, 1], got '1.5'"),
])
def test_unsupported_sampler_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Sampler.from_env(env)
