"""Header and body timeouts and the connection cap, probed with raw sockets on a real server."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningServer, run_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def limited(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with run_server(models_dir, tmp_path_factory.mktemp("limited"), "--header-timeout", "1",
                    "--body-timeout", "1", "--max-connections", "40") as s:
        yield s


def _connect(server: RunningServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (fails past `timeout`)."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        except TimeoutError:
            raise AssertionError(f"connection still open after {timeout} s: {data!r}") from None
        if not chunk:
            return data
        data += chunk


def _status_and_body(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _get(sock: socket.socket, path: str = "/v2/health/live") -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


@pytest.mark.parametrize("sent", [
    pytest.param(b"", id="nothing"),
    pytest.param(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n", id="part-of-headers"),
])
def test_headers_that_never_arrive_get_408(limited: RunningServer, sent: bytes) -> None:
    with _connect(limited) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        status, body = _status_and_body(_read_until_closed(sock))
        assert status == 408 and "headers did not arrive within 1 s" in str(body["error"])
        assert time.monotonic() - started < 5


def test_a_body_that_stops_gets_408(limited: RunningServer) -> None:
    with _connect(limited) as sock:
        sock.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"inputs\"")
        status, body = _status_and_body(_read_until_closed(sock))
        assert status == 408 and "body did not arrive" in str(body["error"])
    with _connect(limited) as sock:  # and the server still answers
        assert _get(sock).startswith(b"HTTP/1.1 200")


def test_a_kept_alive_connection_is_timed_per_request(limited: RunningServer) -> None:
    with _connect(limited) as sock:
        for _ in range(3):  # longer in all than the header timeout, each request quick
            assert _get(sock).startswith(b"HTTP/1.1 200")
            time.sleep(0.5)
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
        assert _status_and_body(_read_until_closed(sock))[0] == 408


def test_many_stalled_connections_are_all_closed(limited: RunningServer) -> None:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(_connect(limited)) for _ in range(30)]
        for sock in socks:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for sock in socks:
            assert _status_and_body(_read_until_closed(sock))[0] == 408


def test_connections_past_the_cap_get_a_fast_503(limited: RunningServer) -> None:
    with contextlib.ExitStack() as stack:
        held = []
        for _ in range(40):  # kept alive, each after one answered request
            sock = stack.enter_context(_connect(limited))
            assert _get(sock).startswith(b"HTTP/1.1 200")
            held.append(sock)
        with _connect(limited) as extra:
            started = time.monotonic()
            extra.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            raw = _read_until_closed(extra)
            assert time.monotonic() - started < 1
            status, body = _status_and_body(raw)
            assert status == 503 and "too many open connections" in str(body["error"])
            assert b"connection: close" in raw.lower()
        for sock in held[:5]:
            sock.close()
        deadline = time.monotonic() + 10
        while True:  # the server sees the closes shortly; then new connections are served
            with _connect(limited) as sock:
                if _get(sock).startswith(b"HTTP/1.1 200"):
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)
