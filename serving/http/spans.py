"""The HTTP side of tracing: a sampled inference request's span, after its response is sent."""

from __future__ import annotations

from starlette.types import Scope

from serving.dataplane import Served
from serving.tracing import RequestTrace
from serving.tracing.semconv import http_server, serving_attributes

_ROUTES = {
    ("v2", False): "/v2/models/{model}/infer",
    ("v2", True): "/v2/models/{model}/versions/{version}/infer",
    ("v1", False): "/v1/models/{model}:predict",
    ("v1", True): "/v1/models/{model}/versions/{version}:predict",
}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def end_trace(
    trace: RequestTrace, scope: Scope, proto: str, version: str, route: str, status: int,
    info: Served | None, failure: Exception | None,
) -> None:
    """Export a sampled request's spans: `version` and `route` answered it (or were routed to)
    with `status`; `failure` is the error behind a 4xx/5xx."""
    client = scope.get("client")
    name, attrs = http_server(
        scope["method"], scope["path"], _ROUTES[proto, trace.version is not None], status,
        scheme=scope.get("scheme", "http"), host=_header(scope, b"host"),
        client=(client[0], client[1]) if client else None,
        protocol_version=scope.get("http_version"), user_agent=_header(scope, b"user-agent"),
    )
    attrs.update(serving_attributes(
        trace.model, version, route, info.request_id if info is not None else None,
        info.batch_size if info is not None else None,
    ))
    attrs["serving.protocol"] = proto
    error = str(failure) if status >= 500 and failure is not None else None
    trace.end(name, attrs, info, error)
