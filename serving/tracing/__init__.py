"""OpenTelemetry tracing of inference requests, off unless `serving serve --tracing`.

The process has at most one Tracer (`active()`), set up from the standard OTEL_* variables by
`serving.tracing.export.configure` before the app and its schedulers are built; each of them
reads `active()` once, so with tracing off a request meets one `is None` test and OpenTelemetry
is never imported. Protocol adapters call `Tracer.start_request` with the request's headers or
metadata and `RequestTrace.end` after the response is sent; the scheduler calls
`Tracer.batch_ran` once per batch.
"""

from __future__ import annotations

from serving.tracing.request import RequestTrace, Tracer

__all__ = ["RequestTrace", "Tracer", "activate", "active"]
_active: Tracer | None = None


def active() -> Tracer | None:
    """The process's tracer, or None when tracing is off."""
    return _active


def activate(tracer: Tracer | None) -> None:
    """Make `tracer` the process's tracer (None: tracing off)."""
    global _active
    _active = tracer

