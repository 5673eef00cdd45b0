"""The gRPC server's HTTP/2 against real clients: grpcio's client channel (grpc-core), with
large messages past the default 64 KiB windows, calls over the limit, cancelled calls, many
calls and many connections; and raw sockets sending what no client should, beside a good
client that must not notice. tritonclient and perf_analyzer run in tests/e2e/test_grpc.py."""

from __future__ import annotations

import multiprocessing
import shutil
import socket
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import run_server, wait_for
from tests.e2e import h2_checks as checks
from tests.e2e.models import identity_model, iris_like, publish
from tests.e2e.test_grpc import GrpcServer, call, call_async, free_port, metric

pytestmark = pytest.mark.e2e

LIMIT = 20 * 1024 * 1024  # --grpc-max-message-bytes of the module's server
WIDTH = 1024  # the wide model's row: 4 KiB of FP32
WIDE_TOML = """[batching]
enabled = false
max_batch_size = 8192
"""
SLOW_TOML = """[batching]
max_batch_size = 64
workers = 1
inline_max_us = 0
"""
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GOAWAY, PROTOCOL_ERROR, FRAME_SIZE_ERROR, COMPRESSION_ERROR = 7, 1, 6, 9


@pytest.fixture(scope="module")
def registry(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("h2") / "registry"
    shutil.copytree(models_dir, root)
    publish(root, "wide", identity_model(["FP32"], WIDTH), WIDE_TOML)
    publish(root, "slow", iris_like("slow"), SLOW_TOML)
    return root


@pytest.fixture(scope="module")
def server(registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServer]:
    port = free_port()
    with run_server(registry, tmp_path_factory.mktemp("h2-server"), "--grpc-port", str(port),
                    "--grpc-max-message-bytes", str(LIMIT)) as s:
        yield GrpcServer(s, f"127.0.0.1:{port}")


@pytest.fixture(scope="module")
def child() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def test_large_messages_flow_past_the_default_windows(
    server: GrpcServer, child: ProcessPoolExecutor
) -> None:
    """8 MiB each way per call, three calls on one connection: far past the 64 KiB windows
    both sides start with, and past the server's connection window between them."""
    rows = 2048
    sizes = call(child, checks.large_round_trips, server.address, "wide", rows, WIDTH, 3)
    assert sizes == [rows * WIDTH * 4] * 3


def test_a_message_over_the_limit_is_refused_and_the_connection_goes_on(
    server: GrpcServer, child: ProcessPoolExecutor
) -> None:
    rows = LIMIT // (WIDTH * 4) + 1
    code, details, after = call(child, checks.over_the_limit, server.address, "wide", rows, WIDTH)
    assert code == "RESOURCE_EXHAUSTED" and str(LIMIT) in details, (code, details)
    assert after


def test_an_unknown_method_is_unimplemented(
    server: GrpcServer, child: ProcessPoolExecutor
) -> None:
    code, details = call(child, checks.unknown_method, server.address)
    assert code == "UNIMPLEMENTED" and "Nope" in details, (code, details)


def test_a_cancelled_call_harms_no_other(server: GrpcServer, child: ProcessPoolExecutor) -> None:
    """A long call cancelled by its client (RST_STREAM) while 100 calls run beside it on the
    same connection: they all succeed, and the server counts the long one cancelled."""

    def cancelled() -> float:
        return metric(server, "serving_protocol_requests_total", model="slow", protocol="grpc",
                      outcome="cancelled")

    before = cancelled()
    outcome, ok = call(child, checks.cancel_while_others_run, server.address, "slow")
    assert outcome == ["cancelled"] and ok == 100, (outcome, ok)
    wait_for(lambda: cancelled() == before + 1)


def test_many_calls_on_one_connection(server: GrpcServer, child: ProcessPoolExecutor) -> None:
    assert call(child, checks.many_calls_one_connection, server.address, 500) == 500


def test_many_connections(server: GrpcServer, child: ProcessPoolExecutor) -> None:
    assert call(child, checks.many_connections, server.address, 40, 10) == 400


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return struct.pack(">BHBBL", n >> 16, n & 0xFFFF, kind, flags, stream) + payload


def _exchange(port: int, data: bytes) -> tuple[list[tuple[int, bytes]], bool]:
    """Send `data` on a raw connection and read until the server closes it (10 s at most):
    the (type, payload) of each frame received, and whether it closed."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        closed = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            got += chunk
    frames, pos = [], 0
    while len(got) - pos >= 9:
        high, low, kind, _flags, _stream = struct.unpack_from(">BHBBL", got, pos)
        n = high << 16 | low
        frames.append((kind, got[pos + 9:pos + 9 + n]))
        pos += 9 + n
    return frames, closed


SETTINGS = _frame(4, 0, 0)
MALFORMED = [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", PROTOCOL_ERROR),  # not HTTP/2
    (bytes(range(256)) * 8, PROTOCOL_ERROR),  # garbage
    (PREFACE + SETTINGS + _frame(0, 0, 0, b"x"), PROTOCOL_ERROR),  # DATA on stream 0
    (PREFACE + SETTINGS + _frame(1, 4, 2, b"\x83"), PROTOCOL_ERROR),  # HEADERS, even stream
    (PREFACE + SETTINGS + _frame(1, 4, 1, b"\xff\xff\xff\xff\x0f"), COMPRESSION_ERROR),
    (PREFACE + SETTINGS + struct.pack(">BHBBL", 16, 0, 0, 0, 1), FRAME_SIZE_ERROR),  # 1 MiB
    (PREFACE + SETTINGS + _frame(6, 0, 0, b"1234"), FRAME_SIZE_ERROR),  # a PING of 4 bytes
    (PREFACE + _frame(4, 0, 0, b"\x00\x04\xff\xff\xff\xff"), 3),  # window > 2^31-1: FLOW_CONTROL
    (PREFACE + SETTINGS + _frame(9, 4, 1, b"\x83"), PROTOCOL_ERROR),  # CONTINUATION alone
]


def test_malformed_connections_are_closed_and_harm_no_other(
    server: GrpcServer, child: ProcessPoolExecutor
) -> None:
    """Each malformed connection gets GOAWAY with its error code and is closed, while a good
    client calls without a failure on its own connection."""
    port = int(server.address.rsplit(":", 1)[1])
    good = call_async(child, checks.calls_for, server.address, 4.0)
    for data, code in MALFORMED:
        frames, closed = _exchange(port, data)
        goaways = [p for kind, p in frames if kind == GOAWAY]
        assert closed and goaways, (data[:40], frames)
        assert struct.unpack_from(">L", goaways[-1], 4)[0] == code, (data[:40], goaways)
    outcomes = good.result(timeout=120)
    assert outcomes and set(outcomes) == {"OK"}, outcomes


def test_graceful_drain_finishes_the_calls_in_flight(
    registry: Path, tmp_path: Path, child: ProcessPoolExecutor
) -> None:
    """SIGTERM with long calls in flight on one connection (one batch of 64 rows at a time):
    all are answered, the server exits 0, and a call after them finds no server (GOAWAY,
    then no listener)."""
    port, n = free_port(), 16
    rows = {"model": "slow", "version": "1"}
    with run_server(registry, tmp_path, "--grpc-port", str(port)) as s:
        g = GrpcServer(s, f"127.0.0.1:{port}")
        outcome = call_async(child, checks.drained, g.address, "slow", n)
        wait_for(lambda: metric(g, "serving_batch_rows_total", **rows) >= 64)
        assert metric(g, "serving_batch_rows_total", **rows) < 64 * (n - 2)  # still running
        s.proc.send_signal(15)
        codes, after = outcome.result(timeout=120)
        assert codes == ["OK"] * n, codes
        assert after == "UNAVAILABLE", after
        assert s.proc.wait(60) == 0
