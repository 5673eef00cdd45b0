"""Span names and attributes by OpenTelemetry's semantic conventions (HTTP: stable; RPC: the
release candidate's `rpc.system.name`, `rpc.method`, `rpc.response.status_code`), plus ours
under `serving.*`. Built only for sampled requests, after the response is sent."""

from __future__ import annotations

from serving.tracing.request import Attributes, AttrValue

_METHODS = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")
)
GRPC_SERVICE = "inference.GRPCInferenceService"
# gRPC codes that make a server span an error (the semantic conventions' list)
_GRPC_SERVER_ERRORS = frozenset(
    ("UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS")
)


def serving_attributes(
    model: str, version: str, route: str, request_id: str | None = None,
    batch_size: int | None = None,
) -> Attributes:
    """Ours: the model, the version and route that answered, the request id and batch size."""
    attrs: Attributes = {
        "serving.model.name": model, "serving.model.version": version, "serving.route": route,
    }
    if request_id:
        attrs["serving.request.id"] = request_id
    if batch_size is not None:
        attrs["serving.batch.size"] = batch_size
    return attrs


def _host_port(host: str) -> tuple[str, str]:
    """A Host header's address and port ("[::1]:8000" -> "::1", "8000")."""
    if host.startswith("["):
        address, _, rest = host[1:].partition("]")
        return address, rest[1:] if rest.startswith(":") else ""
    address, _, port = host.partition(":")
    return address, port


def http_server(
    method: str, path: str, route: str, status: int, *, scheme: str = "http",
    host: str | None = None, client: tuple[str, int] | None = None,
    protocol_version: str | None = None, user_agent: str | None = None,
) -> tuple[str, Attributes]:
    """An HTTP server span's name and attributes. `route`: the path template (http.route);
    `host`: the Host header (else server.address is left out)."""
    known = method if method in _METHODS else "_OTHER"
    attrs: dict[str, AttrValue] = {
        "http.request.method": known, "url.path": path, "url.scheme": scheme,
        "http.route": route, "http.response.status_code": status,
    }
    if known != method:
        attrs["http.request.method_original"] = method
    if host:
        address, port = _host_port(host)
        attrs["server.address"] = address
        if port.isdigit():
            attrs["server.port"] = int(port)
    if client is not None:
        attrs["client.address"] = client[0]
        attrs["network.peer.address"], attrs["network.peer.port"] = client
    if protocol_version:
        attrs["network.protocol.version"] = protocol_version
    if user_agent:
        attrs["user_agent.original"] = user_agent
    if status >= 500:  # a server span's error; 4xx are the client's
        attrs["error.type"] = str(status)
    return f"{known if known != '_OTHER' else 'HTTP'} {route}", attrs


def grpc_server(
    method: str, code: str, *, peer: tuple[str, int] | None = None,
    server: tuple[str, int] | None = None,
) -> tuple[str, Attributes, bool]:
    """A gRPC server span's name, attributes and whether it failed. `method`: the method of
    inference.GRPCInferenceService ("ModelInfer"); `code`: the status code's name ("OK")."""
    full = f"{GRPC_SERVICE}/{method}"
    attrs: Attributes = {
        "rpc.system.name": "grpc", "rpc.method": full, "rpc.response.status_code": code,
    }
    if server is not None:
        attrs["server.address"], attrs["server.port"] = server
    if peer is not None:
        attrs["client.address"] = peer[0]
        attrs["network.peer.address"], attrs["network.peer.port"] = peer
    failed = code in _GRPC_SERVER_ERRORS
    if failed:
        attrs["error.type"] = code
    return full, attrs, failed
