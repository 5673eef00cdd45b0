"""serving.client.Client against a real HTTP server on loopback (the standard library's)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serving.client import Client, Refused, Unreachable


class _Handler(BaseHTTPRequestHandler):
    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/text":
            self._answer(200, b"not json")
        elif self.path == "/plain-error":
            self._answer(502, b"<html>bad gateway</html>")
        else:
            self._answer(200, json.dumps({"auth": self.headers.get("Authorization")}).encode())

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/denied":
            self._answer(401, b'{"error": "needs a token"}')
        else:
            self._answer(200, json.dumps({"got": json.loads(body),
                                          "type": self.headers["Content-Type"]}).encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_json_both_ways_and_the_token(url: str) -> None:
    assert Client(url, "s3cret").get("/x") == {"auth": "Bearer s3cret"}
    assert Client(url).get("/x") == {"auth": None}
    assert Client(url).post("/x", {"a": [1]}) == {"got": {"a": [1]}, "type": "application/json"}
    assert Client(url).post("/x") == {"got": {}, "type": "application/json"}


def test_errors_carry_the_status_and_the_servers_message(url: str) -> None:
    with pytest.raises(Refused) as err:
        Client(url).post("/denied")
    assert (err.value.status, err.value.message) == (401, "needs a token")
    with pytest.raises(Refused, match="502: Bad Gateway"):
        Client(url).get("/plain-error")
    with pytest.raises(Unreachable, match="did not answer JSON"):
        Client(url).get("/text")


def test_no_server_is_unreachable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(Unreachable, match="cannot reach"):
        Client(f"http://127.0.0.1:{port}", timeout_s=5).get("/v2")
