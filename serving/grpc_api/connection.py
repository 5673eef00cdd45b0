"""One client connection: HTTP/2 over cleartext with prior knowledge (h2c, what gRPC's
insecure channels speak), as an asyncio Protocol on the server's event loop.

A call's path: `data_received` splits the buffer into frames (`frames.split`); HEADERS is
decoded (`headers.HeaderDecoder`, cached) into a `Call`; its DATA is collected until
END_STREAM; then the message is parsed and its handler runs as a task on this loop; when the
task is done the answer goes out in one write (`output.Output`). Protocol errors end the
connection with GOAWAY, or the stream with RST_STREAM, and never reach other connections."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from struct import Struct
from typing import cast

from serving.grpc_api import frames as f
from serving.grpc_api.call import Call, Methods
from serving.grpc_api.frames import ConnectionFailure, StreamError
from serving.grpc_api.headers import MAX_HEADER_LIST, HeaderDecoder
from serving.grpc_api.output import Output
from serving.grpc_api.status import StatusCode

log = logging.getLogger("serving.grpc")

MAX_STREAMS = 1024  # calls in flight on one connection (SETTINGS_MAX_CONCURRENT_STREAMS)
CONNECTION_WINDOW = 16 * 1024 * 1024  # request bytes a client may send ahead of our credit
BUFFER_BUDGET = 64 * 1024 * 1024  # at least: request bytes one connection may hold
PREFACE_TIMEOUT_S = 10.0  # a connection that has not sent the preface by then is closed
_PREFIX = Struct(">BL")


class Connection(asyncio.Protocol, Output):
    """An HTTP/2 server connection serving `methods`."""

    def __init__(self, methods: Methods, limit: int, connections: set[Connection]) -> None:
        Output.__init__(self, limit)
        self.methods = methods
        self.connections = connections
        self.loop = asyncio.get_running_loop()
        self.buf = bytearray()
        self.preface = False
        self.decoder = HeaderDecoder()
        self.last_stream = 0  # the highest stream a client opened
        self.continued: tuple[int, int, bytearray] | None = None  # HEADERS awaiting CONTINUATION
        # a stream's window is a whole message: no stream WINDOW_UPDATEs to send
        self.stream_window = min(f.MAX_WINDOW, max(f.DEFAULT_WINDOW, limit + 5 + 1024))
        self.recv_window = CONNECTION_WINDOW
        # request bytes held for calls not yet started: past the budget, a call is refused
        self.buffered, self.budget = 0, max(BUFFER_BUDGET, 2 * (limit + 5))
        self.draining = False  # GOAWAY sent: streams above last_stream are ignored
        self.timer: asyncio.TimerHandle | None = None
        self.on_frame: dict[int, Callable[[int, int, bytes], None]] = {
            f.DATA: self._data, f.HEADERS: self._headers, f.PRIORITY: self._priority,
            f.RST_STREAM: self._rst_stream, f.SETTINGS: self._settings,
            f.PUSH_PROMISE: self._push_promise, f.PING: self._ping, f.GOAWAY: self._goaway,
            f.WINDOW_UPDATE: self._window_update, f.CONTINUATION: self._stray_continuation,
        }

    # ---- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.connections.add(self)
        peer = self.transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = f"ipv6:[{peer[0]}]:{peer[1]}" if ":" in peer[0] else \
                f"ipv4:{peer[0]}:{peer[1]}"
        self.transport.write(f.settings({
            f.MAX_CONCURRENT_STREAMS: MAX_STREAMS, f.INITIAL_WINDOW_SIZE: self.stream_window,
            f.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
        }) + f.window_update(0, CONNECTION_WINDOW - f.DEFAULT_WINDOW))
        self.timer = self.loop.call_later(PREFACE_TIMEOUT_S, self._no_preface)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        for call in self.streams.values():
            call.cancel()
        self.streams.clear()
        self.blocked.clear()

    def pause_writing(self) -> None:  # the client reads slower than it asks: take no more
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.closed:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self._handle(self._split(data))
        except ConnectionFailure as exc:
            self.fail(exc.code, str(exc))
            return
        except Exception:  # a bug of ours: this connection ends, the others go on
            log.exception("gRPC connection from %s failed", self.peer)
            self.fail(f.INTERNAL_ERROR, "internal error")
            return
        if self.recv_window < CONNECTION_WINDOW // 2 and not self.closed:
            self.transport.write(f.window_update(0, CONNECTION_WINDOW - self.recv_window))
            self.recv_window = CONNECTION_WINDOW

    def _split(self, data: bytes) -> list[tuple[int, int, int, bytes]]:
        """The whole frames received so far (the rest waits in the buffer)."""
        buf = self.buf
        if not self.preface:
            buf += data
            if not self._read_preface():
                return []
            data = bytes(buf)
            buf.clear()
        if buf:
            buf += data
            frames, used = f.split(buf, f.DEFAULT_FRAME_SIZE)
            del buf[:used]
        else:
            frames, used = f.split(data, f.DEFAULT_FRAME_SIZE)
            if used < len(data):
                buf += data[used:]
        return frames

    def _handle(self, frames: list[tuple[int, int, int, bytes]]) -> None:
        on_frame = self.on_frame
        for kind, flags, stream, payload in frames:
            if self.closed:  # drained meanwhile (the client's GOAWAY)
                return
            if self.continued is not None and kind != f.CONTINUATION:
                raise ConnectionFailure(f.PROTOCOL_ERROR, "a header block was interrupted")
            try:
                handle = on_frame.get(kind)
                if handle is not None:  # unknown frame types are ignored (RFC 9113 5.5)
                    handle(flags, stream, payload)
            except StreamError as exc:
                self._reset(exc.stream, exc.code)

    def _read_preface(self) -> bool:
        """Whether the client's preface is in (the buffer then holds what follows it)."""
        n = min(len(self.buf), len(f.PREFACE))
        if self.buf[:n] != f.PREFACE[:n]:
            raise ConnectionFailure(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
        if n < len(f.PREFACE):
            return False
        del self.buf[:n]
        self.preface = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        return True

    def _no_preface(self) -> None:
        if not self.preface:
            self.fail(f.PROTOCOL_ERROR, "no connection preface")

    def fail(self, code: int, why: str) -> None:
        """End the connection: GOAWAY(code), then close (the calls in flight are cancelled)."""
        if self.closed:
            return
        if code != f.NO_ERROR:
            log.info("gRPC connection from %s closed: %s", self.peer, why)
        self.transport.write(f.goaway(self.last_stream, code, why.encode()[:256]))
        self.closed = True
        self.transport.close()
        for call in self.streams.values():
            call.cancel()

    def drain(self) -> None:
        """Refuse new calls (GOAWAY with the last stream taken) and close once the calls in
        flight are answered."""
        if self.closed or self.draining:
            return
        self.draining = True
        self.transport.write(f.goaway(self.last_stream, f.NO_ERROR))
        if not self.streams:
            self.fail(f.NO_ERROR, "drained")

    def done(self, call: Call) -> None:
        """A call was answered, reset or refused: forget it; a draining connection whose calls
        are all done closes."""
        self.streams.pop(call.id, None)
        self._release(call)
        if self.draining and not self.streams:
            self.fail(f.NO_ERROR, "drained")

    # ---- frames ------------------------------------------------------------------------------

    def _headers(self, flags: int, stream: int, payload: bytes) -> None:
        if stream == 0 or not stream & 1:
            raise ConnectionFailure(f.PROTOCOL_ERROR, f"HEADERS on stream {stream}")
        block = f.unpad(flags, payload, stream)
        if flags & f.PRIORITY_FLAG:
            block = block[5:]
        if flags & f.END_HEADERS:
            self._header_block(flags, stream, block)
        else:
            self.continued = (stream, flags, bytearray(block))

    def _continuation(self, flags: int, stream: int, payload: bytes) -> None:
        assert self.continued is not None
        first, first_flags, block = self.continued
        if stream != first:
            raise ConnectionFailure(f.PROTOCOL_ERROR, "CONTINUATION on another stream")
        block += payload
        if len(block) > MAX_HEADER_LIST:
            raise ConnectionFailure(f.ENHANCE_YOUR_CALM, "a header block over its limit")
        if flags & f.END_HEADERS:
            self.continued = None
            self._header_block(first_flags, stream, bytes(block))

    def _stray_continuation(self, flags: int, stream: int, payload: bytes) -> None:
        if self.continued is None:
            raise ConnectionFailure(f.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        self._continuation(flags, stream, payload)

    def _header_block(self, flags: int, stream: int, block: bytes) -> None:
        call = self.streams.get(stream)
        if call is not None or stream <= self.last_stream:  # trailers, or a closed stream
            self.decoder.trailers(block)  # decoded all the same: it may change the table
            if call is not None:
                if not flags & f.END_STREAM:
                    raise StreamError(stream, f.PROTOCOL_ERROR, "trailers without END_STREAM")
                self._end_stream(call)
            return
        self.last_stream = stream
        if self.draining:
            self.decoder.trailers(block)
            return
        head = self.decoder.decode(block)
        if len(self.streams) >= MAX_STREAMS:
            raise StreamError(stream, f.REFUSED_STREAM, "too many calls in flight")
        call = Call(stream, head, self.send_initial, self.peer)
        self.streams[stream] = call
        if head.refused is not None:
            http, code, message = head.refused
            self.refuse(call, code, message, http)
        elif flags & f.END_STREAM:
            self._end_stream(call)

    def _data(self, flags: int, stream: int, payload: bytes) -> None:
        n = len(payload)
        self.recv_window -= n
        if self.recv_window < 0:
            raise ConnectionFailure(f.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        call = self.streams.get(stream)
        if call is None:
            if stream == 0 or stream > self.last_stream:
                raise ConnectionFailure(f.PROTOCOL_ERROR, f"DATA on idle stream {stream}")
            return  # a call answered or reset already: its late DATA is dropped
        if call.ended:
            raise StreamError(stream, f.STREAM_CLOSED, "DATA after END_STREAM")
        data = f.unpad(flags, payload, stream)
        if data:
            call.chunks.append(data)
            call.size += len(data)
            self.buffered += len(data)
            if self.buffered > self.budget:
                self.refuse(call, StatusCode.RESOURCE_EXHAUSTED, "this connection holds "
                            f"over {self.budget} bytes of requests not yet started")
                return
            if call.expect < 0 and call.size >= 5 and not self._prefix(call):
                return
            if call.size > call.expect >= 0 and call.head.refused is None:
                self.refuse(call, StatusCode.UNIMPLEMENTED,
                            "more than one request message on a unary call")
                return
        if flags & f.END_STREAM:
            self._end_stream(call)

    def _prefix(self, call: Call) -> bool:
        """Check the message's 5-byte prefix: whether the call goes on."""
        compressed, length = _PREFIX.unpack_from(call.body())
        if compressed:
            self.refuse(call, StatusCode.UNIMPLEMENTED,
                        "compressed messages are not supported (send grpc-encoding identity)")
            return False
        if length > self.limit:
            self.refuse(call, StatusCode.RESOURCE_EXHAUSTED,
                        f"the request message has {length} bytes; this server takes at most "
                        f"{self.limit} (--grpc-max-message-bytes)")
            return False
        call.expect = 5 + length
        return True

    def _end_stream(self, call: Call) -> None:
        call.ended = True
        if not call.open:
            return
        method = self.methods.get(call.head.path)
        if method is None:
            self.refuse(call, StatusCode.UNIMPLEMENTED, f"unknown method {call.head.path}")
            return
        if call.size != call.expect:
            self.refuse(call, StatusCode.UNIMPLEMENTED if call.size == 0 else
                        StatusCode.INTERNAL, "a unary call takes exactly one request message")
            return
        handler, parse = method
        try:
            msg = parse(memoryview(call.body())[5:])  # type: ignore[arg-type]
        except Exception as exc:  # protobuf's DecodeError
            self.refuse(call, StatusCode.INVALID_ARGUMENT, f"cannot parse the request: {exc}")
            return
        self._release(call)
        call.task = self.loop.create_task(self.serve(call, handler, msg))

    def _release(self, call: Call) -> None:
        """The call's request bytes are parsed or dropped: they no longer count."""
        if call.chunks:
            self.buffered -= call.size
            call.chunks = []

    def _rst_stream(self, flags: int, stream: int, payload: bytes) -> None:
        if stream == 0 or len(payload) != 4:
            raise ConnectionFailure(f.PROTOCOL_ERROR, "a malformed RST_STREAM")
        call = self.streams.get(stream)
        if call is not None:
            call.cancel()
            self.blocked.pop(stream, None)
            self.done(call)
        elif stream > self.last_stream:
            raise ConnectionFailure(f.PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream}")

    def _settings(self, flags: int, stream: int, payload: bytes) -> None:
        if stream != 0:
            raise ConnectionFailure(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.ACK:
            if payload:
                raise ConnectionFailure(f.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        for key, value in f.parse_settings(payload):
            if key == f.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise ConnectionFailure(f.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large")
                self.initial_window(value)
            elif key == f.MAX_FRAME_SIZE:
                if not f.DEFAULT_FRAME_SIZE <= value <= f.MAX_FRAME_SIZE_LIMIT:
                    raise ConnectionFailure(f.PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value}")
                self.max_frame = value
        self.transport.write(f.frame(f.SETTINGS, f.ACK, 0))
        self.pump()

    def _ping(self, flags: int, stream: int, payload: bytes) -> None:
        if stream != 0:
            raise ConnectionFailure(f.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ConnectionFailure(f.FRAME_SIZE_ERROR, "PING of other than 8 bytes")
        if not flags & f.ACK:
            self.transport.write(f.frame(f.PING, f.ACK, 0, payload))

    def _goaway(self, flags: int, stream: int, payload: bytes) -> None:
        if stream != 0 or len(payload) < 8:
            raise ConnectionFailure(f.PROTOCOL_ERROR, "a malformed GOAWAY")
        self.drain()  # the client opens no more calls here: finish those in flight, close

    def _window_update(self, flags: int, stream: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionFailure(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE of other than 4 bytes")
        self.credit(stream, f.u32(payload) & 0x7FFFFFFF)

    def _priority(self, flags: int, stream: int, payload: bytes) -> None:
        if len(payload) != 5:
            raise StreamError(stream, f.FRAME_SIZE_ERROR, "PRIORITY of other than 5 bytes")

    def _push_promise(self, flags: int, stream: int, payload: bytes) -> None:
        raise ConnectionFailure(f.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
