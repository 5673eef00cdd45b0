"""The inference endpoints as a raw ASGI app: the request path skips Starlette's objects.

Measured on these machines a Starlette route costs ~17 us more per request than a raw ASGI
endpoint (DESIGN.md); for one-row requests that is a third of the budget, so the hot routes
(`POST /v2/models/{m}[/versions/{v}]/infer` and `POST /v1/models/{m}[/versions/{v}]:predict`)
are dispatched here before Starlette's router sees them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from time import perf_counter

from starlette.types import Receive, Scope, Send

from serving import tracing
from serving.dataplane import DataPlane, Refused, Served
from serving.errors import BadRequest, MethodNotAllowed, PayloadTooLarge
from serving.http.disconnect import disconnect_probe
from serving.http.errors import error_parts
from serving.http.onewrite import cork_response
from serving.http.spans import end_trace
from serving.monitoring.access import access_log_line
from serving.monitoring.metrics import ServingMetrics
from serving.tracing import RequestTrace

_JSON_HEADERS = [(b"content-type", b"application/json")]
_BINARY_TYPE = (b"content-type", b"application/octet-stream")


class ClientGone(Exception):
    """The client disconnected while we read its body: nobody to answer."""


def match_infer(path: str) -> tuple[str, str, str | None] | None:
    """("v2"|"v1", model, version) when `path` is an inference route, else None."""
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        parts = path[11:-6].split("/")
        proto = "v2"
    elif path.startswith("/v1/models/") and path.endswith(":predict"):
        parts = path[11:-8].split("/")
        proto = "v1"
    else:
        return None
    if len(parts) == 1 and parts[0]:
        return proto, parts[0], None
    if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
        return proto, parts[0], parts[2]
    return None


async def _read_body(receive: Receive, limit: int, declared: int) -> bytes:
    if declared > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the {limit} byte limit")
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit} byte limit")
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit} byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _int_header(value: bytes, name: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise BadRequest(f"{name} must be a non-negative integer, got {value[:32]!r}")
    return int(value)


def _read_headers(
    headers: Iterable[tuple[bytes, bytes]], routing_header: bytes
) -> tuple[int, int | None, str | None]:
    """Content-Length, Inference-Header-Content-Length and the routing key of a request."""
    declared = 0
    header_length: int | None = None
    routing_key: str | None = None
    for key, value in headers:
        if key == b"content-length":
            declared = _int_header(value, "Content-Length")
        elif key == b"inference-header-content-length":
            header_length = _int_header(value, "Inference-Header-Content-Length")
        elif key == routing_header:
            routing_key = value[:256].decode("latin-1")
    return declared, header_length, routing_key


class InferEndpoint:
    """ASGI callable for the inference routes (V2 infer and V1 predict)."""

    def __init__(
        self, dataplane: DataPlane, max_body_bytes: int, metrics: ServingMetrics,
        routing_header: str = "x-routing-key",
        access_log: bool = False,
    ) -> None:
        self.dataplane = dataplane
        self.max_body_bytes = max_body_bytes
        self.record = metrics.record
        self.routing_header = routing_header.lower().encode()
        self.access_log: Callable[..., None] | None = access_log_line if access_log else None
        self.tracer = tracing.active()  # None unless `serve --tracing`
        # What runs after the response is sent, if anything: the access log, tracing or both
        self.observe = self._observe if access_log or self.tracer is not None else None

    def _observe(
        self, scope: Scope, proto: str, model: str, version: str, route: str, status: int,
        elapsed: float, info: Served | None, trace: RequestTrace | None,
        failure: Exception | None,
    ) -> None:
        if self.access_log is not None:
            self.access_log(model, version, route, status, elapsed, info, proto)
        if trace is not None:
            end_trace(trace, scope, proto, version, route, status, info, failure)

    def _dispatch(
        self, proto: str, model: str, version: str | None, body: bytes,
        header_length: int | None, receive: Receive, routing_key: str | None,
        trace: RequestTrace | None,
    ) -> Awaitable[tuple[bytes, int | None, Served] | Refused]:
        """The dataplane call for the protocol (a plain function: no extra coroutine frame)."""
        if proto == "v2":
            return self.dataplane.infer_v2(
                model, version, body, header_length, disconnect_probe(receive), routing_key,
                trace,
            )
        if header_length is not None:
            raise BadRequest("V1 predict takes JSON only (no binary tensors)")
        return self.dataplane.predict_v1(model, version, body, routing_key, trace)

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, route: tuple[str, str, str | None]
    ) -> None:
        started = perf_counter()
        proto, model, version = route
        status = 200
        headers = _JSON_HEADERS
        served = version or ""
        served_route = "primary"
        outcome = "success"
        info = None
        failure = None
        # the one test tracing costs when off
        trace = None if self.tracer is None else self.tracer.start_request(
            scope["headers"], model, version, "http")
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"use POST for inference, not {scope['method']}")
            declared, header_length, routing_key = _read_headers(
                scope["headers"], self.routing_header
            )
            body = await _read_body(receive, self.max_body_bytes, declared)
            answer = await self._dispatch(
                proto, model, version, body, header_length, receive, routing_key, trace
            )
            if isinstance(answer, Refused):  # routed, then refused: counts for that version
                served, served_route = answer.version, answer.route
                raise answer.error
            out, out_header_length, info = answer
            served, served_route = info.version, info.route
            if out_header_length is not None:
                headers = [
                    _BINARY_TYPE,
                    (b"inference-header-content-length", str(out_header_length).encode()),
                ]
        except ClientGone:
            self.record(model, served, "primary", "cancelled", perf_counter() - started)
            return
        except Exception as exc:
            failure = exc
            status, out, extra = error_parts(exc)
            outcome = getattr(exc, "reason", "server_error")
            headers = _JSON_HEADERS + [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        response_headers = [*headers, (b"content-length", str(len(out)).encode())]
        if status == 200:
            response_headers.append((b"x-model-version", served.encode()))
            response_headers.append((b"x-route", served_route.encode()))
            rid = info.request_id if info is not None else None
            if rid and rid.isascii() and rid.isprintable():  # the id feedback names
                response_headers.append((b"x-request-id", rid.encode()))
        cork = cork_response(send)  # head and body leave in one write
        try:
            await send(
                {"type": "http.response.start", "status": status, "headers": response_headers}
            )
            await send({"type": "http.response.body", "body": out})
        finally:
            if cork is not None:
                cork.release()
        elapsed = perf_counter() - started
        self.record(model, served, served_route, outcome, elapsed, info)
        if self.observe is not None:
            self.observe(scope, proto, model, served, served_route, status, elapsed, info, trace,
                         failure)

