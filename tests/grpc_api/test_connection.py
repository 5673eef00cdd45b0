"""The HTTP/2 connection's logic, driven frame by frame through a small fake transport (what it
writes is read back with hpack's decoder): answers in one write, flow control both ways,
CONTINUATION, PING and SETTINGS, RST_STREAM cancelling the handler, the message checks, drain.
Real clients against a real server: tests/e2e/test_grpc_h2.py."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Coroutine
from typing import Any

from hpack import Decoder, Encoder
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.grpc_api import frames as f
from serving.grpc_api.call import Call
from serving.grpc_api.connection import Connection

PATH = "/pkg.Svc/Echo"


class Transport:
    """What the connection writes; whether it closed."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.writes = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data
        self.writes += 1

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5000) if name == "peername" else None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Reply:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:  # protobuf's name
        return self.data


class Client:
    """One connection seen from the client's side."""

    def __init__(self, handler: Callable[[Any, Call], Coroutine[Any, Any, Any]],
                 limit: int = 1 << 20) -> None:
        self.conn = Connection({PATH: (handler, bytes)}, limit, set())
        self.transport = Transport()
        self.conn.connection_made(self.transport)  # type: ignore[arg-type]
        self.enc, self.dec = Encoder(), Decoder()
        self.seen = 0
        self.send(f.PREFACE + f.settings({}))

    def send(self, data: bytes) -> None:
        self.conn.data_received(data)

    def call(self, stream: int, message: bytes, end: bool = True, **headers: str) -> None:
        fields = [(":method", "POST"), (":scheme", "http"), (":path", PATH),
                  (":authority", "x"), ("content-type", "application/grpc"),
                  *((k.replace("_", "-"), v) for k, v in headers.items())]
        self.send(f.frame(f.HEADERS, f.END_HEADERS, stream, self.enc.encode(fields))
                  + f.frame(f.DATA, f.END_STREAM if end else 0, stream,
                            struct.pack(">BL", 0, len(message)) + message))

    def frames(self) -> list[tuple[int, int, int, Any]]:
        """The frames written since the last look; header blocks decoded."""
        got, _ = f.split(self.transport.out[self.seen:], f.MAX_FRAME_SIZE_LIMIT)
        self.seen = len(self.transport.out)
        return [(k, fl, s, dict(self.dec.decode(p)) if k == f.HEADERS else p)
                for k, fl, s, p in got]


async def echo(msg: bytes, call: Call) -> Reply:
    return Reply(bytes(msg) * 2)


async def settle() -> None:
    """Let the handlers' tasks and their done callbacks run."""
    for _ in range(3):
        await asyncio.sleep(0)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def test_a_call_is_answered_in_one_write() -> None:
    async def test() -> None:
        c = Client(echo)
        assert [k for k, *_ in c.frames()] == [f.SETTINGS, f.WINDOW_UPDATE, f.SETTINGS]
        c.call(1, b"hi")
        writes = c.transport.writes
        await settle()
        assert c.transport.writes == writes + 1
        (h, _, _, head), (d, _, _, data), (t, tf, _, trailers) = c.frames()
        assert (h, d, t) == (f.HEADERS, f.DATA, f.HEADERS) and tf & f.END_STREAM
        assert head == {":status": "200", "content-type": "application/grpc"}
        assert data == b"\x00\x00\x00\x00\x04hihi" and trailers == {"grpc-status": "0"}
        assert not c.conn.streams

    run(test)


def test_the_answer_waits_for_the_clients_windows() -> None:
    async def test() -> None:
        c = Client(echo)
        c.send(f.settings({f.INITIAL_WINDOW_SIZE: 10}))
        c.call(1, b"x" * 50)  # answer: 5 + 100 bytes
        await settle()
        sent = c.frames()
        data = b"".join(p for k, _, _, p in sent if k == f.DATA)
        assert len(data) == 10 and not any(k == f.HEADERS and fl & f.END_STREAM
                                           for k, fl, _, _ in sent)
        c.send(f.settings({f.INITIAL_WINDOW_SIZE: 60}))  # +50 for the open stream
        assert len(b"".join(p for k, _, _, p in c.frames() if k == f.DATA)) == 50
        c.send(f.window_update(1, 1000))
        rest = c.frames()
        assert len(b"".join(p for k, _, _, p in rest if k == f.DATA)) == 45
        assert rest[-1][0] == f.HEADERS and rest[-1][3] == {"grpc-status": "0"}

    run(test)


def test_the_connection_window_and_frame_size_bound_the_answer() -> None:
    async def test() -> None:
        c = Client(echo, limit=1 << 22)
        c.send(f.settings({f.INITIAL_WINDOW_SIZE: 1 << 30}))
        big = b"y" * 100_000
        c.send(f.frame(f.HEADERS, f.END_HEADERS, 1, c.enc.encode(
            [(":method", "POST"), (":path", PATH), ("content-type", "application/grpc")])))
        wire = struct.pack(">BL", 0, len(big)) + big
        step = f.DEFAULT_FRAME_SIZE
        for i in range(0, len(wire), step):  # the message in many DATA frames
            last = i + step >= len(wire)
            c.send(f.frame(f.DATA, f.END_STREAM if last else 0, 1, wire[i:i + step]))
        await settle()
        sent = c.frames()
        data = [p for k, _, _, p in sent if k == f.DATA]
        assert sum(map(len, data)) <= f.DEFAULT_WINDOW  # the connection's first window
        assert all(len(p) <= f.DEFAULT_FRAME_SIZE for p in data)
        c.send(f.window_update(0, 1 << 20))
        data += [p for k, _, _, p in c.frames() if k == f.DATA]
        assert sum(map(len, data)) == 5 + 2 * len(big)

    run(test)


def test_continuation_ping_and_settings() -> None:
    async def test() -> None:
        c = Client(echo)
        c.frames()
        block = c.enc.encode([(":method", "POST"), (":path", PATH),
                              ("content-type", "application/grpc"), ("x-key", "k" * 100)])
        c.send(f.frame(f.HEADERS, 0, 1, block[:10]) + f.frame(f.CONTINUATION, 0, 1, block[10:50])
               + f.frame(f.CONTINUATION, f.END_HEADERS, 1, block[50:])
               + f.frame(f.DATA, f.END_STREAM, 1, b"\x00\x00\x00\x00\x01z"))
        c.send(f.frame(f.PING, 0, 0, b"12345678") + f.frame(f.PING, f.ACK, 0, b"87654321"))
        c.send(f.settings({f.MAX_FRAME_SIZE: 1 << 20}))
        await settle()
        sent = c.frames()
        assert (f.PING, f.ACK, 0, b"12345678") in sent
        assert [x for x in sent if x[0] == f.PING] == [(f.PING, f.ACK, 0, b"12345678")]
        assert (f.SETTINGS, f.ACK, 0, b"") in sent and c.conn.max_frame == 1 << 20
        assert (f.DATA, 0, 1, b"\x00\x00\x00\x00\x02zz") in sent

    run(test)


def test_a_reset_cancels_the_handler_and_the_others_go_on() -> None:
    async def test() -> None:
        seen: list[Call] = []
        release = asyncio.Event()

        async def slow(msg: bytes, call: Call) -> Reply:
            seen.append(call)
            await release.wait()
            return Reply(b"late")

        c = Client(slow)
        c.call(1, b"a")
        c.call(3, b"b")
        await settle()
        first, second = seen
        assert first.is_active() and second.is_active()
        c.send(f.rst_stream(1, 8))  # CANCEL
        await settle()
        assert not first.is_active() and first.task is not None and first.task.cancelled()
        release.set()
        await settle()
        answered = {s for k, fl, s, _ in c.frames() if k == f.HEADERS and fl & f.END_STREAM}
        assert answered == {3} and not c.conn.streams

    run(test)


def _status(sent: list[tuple[int, int, int, Any]], stream: int) -> tuple[str, str]:
    *_, fields = [p for k, _, s, p in sent if k == f.HEADERS and s == stream]
    return fields["grpc-status"], fields.get("grpc-message", "")


def test_message_checks() -> None:
    async def test() -> None:
        c = Client(echo, limit=1024)
        c.frames()
        # over the limit: refused from its prefix, before the body; the client is told to stop
        c.send(f.frame(f.HEADERS, f.END_HEADERS, 1, c.enc.encode(
            [(":method", "POST"), (":path", PATH), ("content-type", "application/grpc")]))
            + f.frame(f.DATA, 0, 1, struct.pack(">BL", 0, 5000)))
        sent = c.frames()
        assert _status(sent, 1)[0] == "8" and "1024" in _status(sent, 1)[1]
        assert (f.RST_STREAM, 0, 1, b"\x00\x00\x00\x00") in sent
        c.send(f.frame(f.DATA, f.END_STREAM, 1, b"x" * 100))  # late DATA: dropped
        c.call(3, b"z", grpc_encoding="gzip")
        c.send(f.frame(f.HEADERS, f.END_HEADERS, 5, c.enc.encode(
            [(":method", "POST"), (":path", PATH), ("content-type", "application/grpc")]))
            + f.frame(f.DATA, f.END_STREAM, 5, b"\x01\x00\x00\x00\x01z"))  # compressed
        c.send(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 7, c.enc.encode(
            [(":method", "POST"), (":path", PATH), ("content-type", "application/grpc")])))
        c.send(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 9, c.enc.encode(
            [(":method", "POST"), (":path", "/pkg.Svc/Nope"), ("content-type",
                                                                "application/grpc")])))
        await settle()
        sent = c.frames()
        assert _status(sent, 3)[0] == "0"
        assert _status(sent, 5)[0] == "12" and "compressed" in _status(sent, 5)[1]
        assert _status(sent, 7)[0] == "12"  # no message at all
        assert _status(sent, 9) == ("12", "unknown method /pkg.Svc/Nope")
        assert not c.transport.closed and not c.conn.streams

    run(test)


def test_the_deadline_and_the_context() -> None:
    async def test() -> None:
        seen: list[Call] = []

        async def look(msg: bytes, call: Call) -> Reply:
            seen.append(call)
            return Reply(b"")

        c = Client(look)
        c.call(1, b"", grpc_timeout="2S", x_routing_key="user-1")
        c.call(3, b"")
        await settle()
        timed, untimed = seen
        assert 1.5 < timed.time_remaining() <= 2.0  # type: ignore[operator]
        assert untimed.time_remaining() is None
        assert timed.invocation_metadata() == (("x-routing-key", "user-1"),)
        assert timed.peer() == "ipv4:127.0.0.1:5000"

    run(test)


def test_drain_refuses_new_calls_and_closes_when_the_last_is_answered() -> None:
    async def test() -> None:
        release = asyncio.get_running_loop().create_future()

        async def wait(msg: bytes, call: Call) -> Reply:
            await release
            return Reply(b"")

        c = Client(wait)
        c.call(1, b"")
        await settle()
        c.frames()
        c.conn.drain()
        [(kind, _, _, payload)] = c.frames()
        assert kind == f.GOAWAY and payload == b"\x00\x00\x00\x01\x00\x00\x00\x00"
        c.call(3, b"")  # after the GOAWAY: ignored
        release.set_result(None)
        await settle()
        answered = {s for k, fl, s, _ in c.frames() if k == f.HEADERS and fl & f.END_STREAM}
        assert answered == {1} and c.transport.closed

    run(test)


def test_protocol_errors_end_the_connection() -> None:
    async def test() -> None:
        for data, code in [
            (f.frame(f.DATA, 0, 0, b"x"), f.PROTOCOL_ERROR),
            (f.frame(f.DATA, 0, 9, b"x"), f.PROTOCOL_ERROR),  # an idle stream
            (f.frame(f.HEADERS, 0, 1, b"\x83") + f.frame(f.PING, 0, 0, b"12345678"),
             f.PROTOCOL_ERROR),  # a header block interrupted
            (f.window_update(0, 2**31 - 1), f.FLOW_CONTROL_ERROR),
            (f.frame(f.WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x00"), f.PROTOCOL_ERROR),
            (f.frame(f.SETTINGS, f.ACK, 0, b"x"), f.FRAME_SIZE_ERROR),
            (f.settings({f.MAX_FRAME_SIZE: 100}), f.PROTOCOL_ERROR),
            (f.frame(f.PUSH_PROMISE, 4, 1, b"\x00\x00\x00\x02"), f.PROTOCOL_ERROR),
            (f.HEADER.pack(0, f.DEFAULT_FRAME_SIZE + 1, f.DATA, 0, 1), f.FRAME_SIZE_ERROR),
        ]:
            c = Client(echo)
            c.frames()
            c.send(data)
            [(_, _, _, payload)] = [x for x in c.frames() if x[0] == f.GOAWAY]
            assert f.u32(payload[4:]) == code, (data[:12], payload)
            assert c.transport.closed

    run(test)


def test_requests_held_past_the_budget_are_refused() -> None:
    async def test() -> None:
        c = Client(echo, limit=1024)
        c.conn.budget = 1200
        for stream in (1, 3, 5):  # whole messages, but no END_STREAM yet
            c.call(stream, b"m" * 500, end=False)
        sent = c.frames()
        assert _status(sent, 5)[0] == "8" and "1200" in _status(sent, 5)[1]
        assert c.conn.buffered == 2 * 505 and set(c.conn.streams) == {1, 3}
        c.send(f.frame(f.DATA, f.END_STREAM, 1, b""))
        assert c.conn.buffered == 505  # parsed: no longer held
        c.send(f.rst_stream(3, 8))
        assert c.conn.buffered == 0
        await settle()
        assert _status(c.frames(), 1)[0] == "0"

    run(test)


FRAME = st.tuples(st.integers(0, 12), st.integers(0, 255), st.integers(0, 9),
                  st.binary(max_size=40))


@settings(max_examples=300, deadline=None)
@given(st.lists(FRAME, max_size=8), st.integers(1, 64))
def test_any_frames_end_in_an_answer_or_a_goaway_never_a_crash(
    sent: list[tuple[int, int, int, bytes]], piece: int
) -> None:
    """Arbitrary frames after a valid call, fed in arbitrary pieces: data_received never
    raises, and a connection that writes GOAWAY with an error is closed."""

    async def test() -> None:
        c = Client(echo)
        c.call(1, b"ok")
        wire = b"".join(f.frame(*x) for x in sent)
        for i in range(0, len(wire), piece):
            c.send(wire[i:i + piece])
        await settle()
        errors = [p for k, _, _, p in c.frames() if k == f.GOAWAY and f.u32(p[4:8])]
        assert not errors or c.transport.closed

    run(test)


def test_a_connection_without_a_preface_is_closed_when_its_timer_fires() -> None:
    async def test() -> None:
        conn = Connection({}, 1024, set())
        transport = Transport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.data_received(f.PREFACE[:10])  # a prefix of it: still waiting
        assert conn.timer is not None and not transport.closed
        conn.timer.cancel()
        conn._no_preface()  # what the timer calls
        assert transport.closed and f.GOAWAY in [k for k, *_ in f.split(transport.out, 1 << 20)[0]]

    run(test)
