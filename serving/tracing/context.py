"""W3C trace context and the sampling decision: the only tracing work every traced-on request
does, so it is plain Python with no OpenTelemetry objects.

OpenTelemetry's own propagator and sampler cost about 4 us and 2 us a call on these machines
(a one-row request's whole budget at 64 clients is about 60 us), so they are mirrored here with
the SDK's exact semantics; `tests/tracing/test_context.py` compares the two on generated input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

# The SDK's pattern (opentelemetry.trace.propagation.tracecontext), so both accept the same.
_TRACEPARENT = re.compile(
    "^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$"
)
# The common form (version 00, nothing around it), checked before the general pattern
_V00 = re.compile("00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_NO_TRACE, _NO_SPAN = "0" * 32, "0" * 16
MAX_TRACEPARENT = 512
MAX_TRACESTATE = 512
TRACE_ID_LIMIT = (1 << 64) - 1  # TraceIdRatioBased compares the trace id's low 64 bits

SAMPLERS = (
    "always_on", "always_off", "traceidratio",
    "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio",
)


class Parent(NamedTuple):
    """The caller's span, from its `traceparent` (and `tracestate`)."""

    trace_id: int
    span_id: int
    flags: int
    tracestate: str | None = None

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)


def parse_traceparent(value: str, tracestate: str | None = None) -> Parent | None:
    """The parent a `traceparent` value names, or None when it is missing or invalid."""
    if not value or len(value) > MAX_TRACEPARENT:
        return None
    m = _TRACEPARENT.search(value)
    if m is None:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if trace_id == _NO_TRACE or span_id == _NO_SPAN:
        return None
    if (version == "00" and rest) or version == "ff":
        return None
    if tracestate is not None and len(tracestate) > MAX_TRACESTATE:
        tracestate = None
    return Parent(int(trace_id, 16), int(span_id, 16), int(flags, 16), tracestate)


def parent_flags(value: str) -> int | None:
    """The trace flags of a valid `traceparent`, else None: what a parent-based sampler needs,
    for less than parsing the ids (a caller that samples 1% sends 99% of its requests here with
    the flag off)."""
    m = _V00.fullmatch(value) if len(value) == 55 else None
    if m is None:
        parent = parse_traceparent(value)
        return None if parent is None else parent.flags
    trace_id, span_id, flags = m.groups()
    return None if trace_id == _NO_TRACE or span_id == _NO_SPAN else int(flags, 16)


@dataclass(frozen=True, slots=True)
class Sampler:
    """OTEL_TRACES_SAMPLER's built-in samplers: parent-based or not, and the ratio's bound
    (a trace is sampled when its id's low 64 bits are below it: 0 never, 2**64 always)."""

    parent_based: bool
    bound: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Sampler:
        """The sampler OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG name (default, as the
        SDK's: parentbased_always_on). ValueError for anything else."""
        name = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
        if name not in SAMPLERS:
            raise ValueError(
                f"OTEL_TRACES_SAMPLER={name!r} is not supported; use one of {', '.join(SAMPLERS)}"
            )
        kind = name.removeprefix("parentbased_")
        rate = 1.0 if kind == "always_on" else 0.0
        if kind == "traceidratio":
            text = env.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
            try:
                rate = float(text)
            except ValueError:
                rate = -1.0
            if not 0.0 <= rate <= 1.0:
                raise ValueError(
                    f"OTEL_TRACES_SAMPLER_ARG must be a ratio in [0, 1], got {text!r}"
                )
        return cls(name.startswith("parentbased_"), round(rate * (TRACE_ID_LIMIT + 1)))

    def sampled(self, trace_id: int, parent: Parent | None) -> bool:
        """Whether a request of this trace id (its parent's when it has one) is recorded."""
        if parent is not None and self.parent_based:
            return parent.sampled
        return trace_id & TRACE_ID_LIMIT < self.bound
