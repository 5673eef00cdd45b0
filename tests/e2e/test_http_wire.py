"""Responses stay byte-correct on the wire now that an inference response leaves in one write:
keep-alive, pipelining, errors, HEAD and Starlette routes mixed on one raw socket."""

from __future__ import annotations

import json
import socket
import time

from tests.conftest import RunningServer

IRIS = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]}'
V1 = b'{"instances":[[6.7,3.0,5.2,2.3]]}'


def _request(method: str, path: str, body: bytes = b"", version: str = "1.1") -> bytes:
    head = f"{method} {path} HTTP/{version}\r\nHost: x\r\n"
    if body or method == "POST":
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


class Reader:
    """Reads HTTP/1.1 responses off one socket, exactly as framed (fails past a deadline)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.deadline = time.monotonic() + 20

    def _fill(self) -> bool:
        self.sock.settimeout(max(0.01, self.deadline - time.monotonic()))
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            assert self._fill(), f"closed {n - len(self.buffer)} bytes short"
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"closed mid-head: {self.buffer!r}"
        raw, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        assert status_line.startswith("HTTP/1.1 "), status_line
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"header {name} twice: {raw!r}"
            headers[name.lower()] = value.strip()
        assert "transfer-encoding" not in headers, headers  # every route here sets a length
        body = b"" if head_only else self._take(int(headers["content-length"]))
        return int(status_line.split()[1]), headers, body

    def closed(self) -> bool:
        return not self.buffer and not self._fill()


def _connect(server: RunningServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def test_pipelined_and_kept_alive_responses_are_framed_exactly(server: RunningServer) -> None:
    with _connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(b"".join([
            _request("POST", "/v2/models/iris/infer", IRIS),
            _request("POST", "/v2/models/iris/infer", b"{not json"),
            _request("GET", "/v2/models/iris"),  # a Starlette route between two of ours
            _request("HEAD", "/v2/models/iris/infer"),
            _request("HEAD", "/v2/models/iris"),
            _request("POST", "/v1/models/iris:predict", V1),
            _request("POST", "/v2/models/nosuch/infer", IRIS),
        ]))
        status, headers, body = reader.response()
        assert status == 200 and headers["content-type"] == "application/json"
        assert headers["x-model-version"] == "1" and headers["x-route"] == "primary"
        assert json.loads(body)["outputs"][0]["data"] == [0]
        status, headers, body = reader.response()
        assert status == 400 and "error" in json.loads(body)
        status, _, body = reader.response()
        assert status == 200 and json.loads(body)["name"] == "iris"
        status, headers, _ = reader.response(head_only=True)
        assert status == 405 and int(headers["content-length"]) > 0
        status, headers, _ = reader.response(head_only=True)
        assert status == 200 and int(headers["content-length"]) > 0
        status, _, body = reader.response()
        assert status == 200 and json.loads(body)["predictions"][0]["label"] == 2
        status, _, body = reader.response()
        assert status == 404 and "error" in json.loads(body)
        assert reader.buffer == b""
        for _ in range(3):  # the connection is still good, one request at a time
            sock.sendall(_request("POST", "/v2/models/iris/infer", IRIS))
            status, _, body = reader.response()
            assert status == 200 and json.loads(body)["model_name"] == "iris"
            assert reader.buffer == b""


def test_an_http10_response_is_whole_and_then_closed(server: RunningServer) -> None:
    with _connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(_request("POST", "/v2/models/iris/infer", IRIS, version="1.0"))
        status, headers, body = reader.response()
        assert status == 200 and headers["connection"] == "close"
        assert json.loads(body)["outputs"][0]["data"] == [0]
        assert reader.closed()
