"""Span names and attributes by OpenTelemetry's semantic conventions."""

from __future__ import annotations

import pytest

from serving.tracing.semconv import grpc_server, http_server, serving_attributes


def test_http_server_span() -> None:
    name, attrs = http_server(
        "POST", "/v2/models/iris/infer", "/v2/models/{model}/infer", 200,
        host="example.com:8000", client=("10.0.0.9", 51000), protocol_version="1.1",
        user_agent="curl/8",
    )
    assert name == "POST /v2/models/{model}/infer"
    assert attrs == {
        "http.request.method": "POST", "url.path": "/v2/models/iris/infer", "url.scheme": "http",
        "http.route": "/v2/models/{model}/infer", "http.response.status_code": 200,
        "server.address": "example.com", "server.port": 8000, "client.address": "10.0.0.9",
        "network.peer.address": "10.0.0.9", "network.peer.port": 51000,
        "network.protocol.version": "1.1", "user_agent.original": "curl/8",
    }


@pytest.mark.parametrize("host, address, port", [
    ("[::1]:8000", "::1", 8000), ("[::1]", "::1", None), ("svc", "svc", None),
])
def test_host_header_forms(host: str, address: str, port: int | None) -> None:
    _, attrs = http_server("POST", "/p", "/p", 200, host=host)
    assert attrs["server.address"] == address and attrs.get("server.port") == port


def test_http_errors_and_unknown_methods() -> None:
    _, client_error = http_server("POST", "/p", "/p", 404)
    assert "error.type" not in client_error  # a server span's 4xx is the client's error
    _, server_error = http_server("POST", "/p", "/p", 503)
    assert server_error["error.type"] == "503"
    name, odd = http_server("BREW", "/p", "/p", 405)
    assert name == "HTTP /p"
    assert (odd["http.request.method"], odd["http.request.method_original"]) == ("_OTHER", "BREW")


def test_grpc_server_span() -> None:
    name, attrs, failed = grpc_server("ModelInfer", "OK", peer=("127.0.0.1", 4000),
                                      server=("0.0.0.0", 8001))
    assert name == "inference.GRPCInferenceService/ModelInfer" and not failed
    assert attrs == {
        "rpc.system.name": "grpc", "rpc.method": "inference.GRPCInferenceService/ModelInfer",
        "rpc.response.status_code": "OK", "server.address": "0.0.0.0", "server.port": 8001,
        "client.address": "127.0.0.1", "network.peer.address": "127.0.0.1",
        "network.peer.port": 4000,
    }
    assert grpc_server("ModelInfer", "INVALID_ARGUMENT")[2] is False  # the caller's mistake
    _, attrs, failed = grpc_server("ModelInfer", "UNAVAILABLE")
    assert failed and attrs["error.type"] == "UNAVAILABLE"


def test_serving_attributes() -> None:
    assert serving_attributes("iris", "2", "canary", "r1", 8) == {
        "serving.model.name": "iris", "serving.model.version": "2", "serving.route": "canary",
        "serving.request.id": "r1", "serving.batch.size": 8,
    }
    assert serving_attributes("iris", "", "primary") == {
        "serving.model.name": "iris", "serving.model.version": "", "serving.route": "primary"}
