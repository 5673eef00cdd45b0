"""A connection's sending side: answers as HEADERS + DATA + trailers in one write when the
client's flow-control windows allow (always, for the small answers that are the common case),
else DATA as the windows open (WINDOW_UPDATE), the rest queued on its call."""

from __future__ import annotations

import asyncio
import logging
from struct import Struct
from typing import Any

from serving.errors import ServingError
from serving.grpc_api import frames as f
from serving.grpc_api.call import Call, Handler
from serving.grpc_api.frames import HEADER, ConnectionFailure, StreamError
from serving.grpc_api.headers import OK_TRAILERS, RESPONSE_HEADERS, error_trailers
from serving.grpc_api.status import Aborted, StatusCode

log = logging.getLogger("serving.grpc")

_PREFIX = Struct(">BL")
_HEAD_LEN = len(RESPONSE_HEADERS)
_TRAILERS_LEN = len(OK_TRAILERS)
_pack = HEADER.pack


class Output:
    """What a connection knows about sending, and the answers it sends."""

    transport: asyncio.Transport

    def __init__(self, limit: int) -> None:
        self.limit = limit  # the largest message either way
        self.streams: dict[int, Call] = {}  # calls not yet answered (or not all sent)
        self.blocked: dict[int, Call] = {}  # calls whose DATA waits for the client's windows
        self.send_window = f.DEFAULT_WINDOW  # the connection's, as the client allows
        self.send_initial = f.DEFAULT_WINDOW  # a new stream's (client's INITIAL_WINDOW_SIZE)
        self.max_frame = f.DEFAULT_FRAME_SIZE  # the client's MAX_FRAME_SIZE
        self.peer = ""
        self.closed = False  # the transport is closing or gone: nothing more is written

    def done(self, call: Call) -> None:
        raise NotImplementedError

    async def serve(self, call: Call, handler: Handler, msg: Any) -> None:
        """Run the call's handler and send its answer, unless the call is over by then (a
        task: RST_STREAM cancels it)."""
        try:
            reply = await handler(msg, call)
        except asyncio.CancelledError:
            if call.open and not self.closed:  # not the client: the loop is stopping
                self.refuse(call, StatusCode.CANCELLED, "the call was cancelled")
            raise
        except Aborted as exc:
            if call.open:
                self.refuse(call, exc.code, exc.details)
            return
        except ServingError as exc:  # answered on purpose: its own code and message
            if call.open:
                self.refuse(call, StatusCode(exc.grpc), str(exc))
            return
        except Exception as exc:
            log.error("unhandled error in %s", call.head.path, exc_info=exc)
            if call.open:
                self.refuse(call, StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
            return
        if call.open:
            self.answer(call, reply)

    def answer(self, call: Call, reply: Any) -> None:
        """Send the handler's reply: in one write when the client's windows allow."""
        data: bytes = reply.SerializeToString()
        n = len(data)
        if n > self.limit:
            self.refuse(call, StatusCode.RESOURCE_EXHAUSTED,
                        f"the response message has {n} bytes; this server sends at most "
                        f"{self.limit} (--grpc-max-message-bytes)")
            return
        n += 5
        stream = call.id
        if n <= self.send_window and n <= call.send_window and n <= self.max_frame:
            self.send_window -= n
            self.transport.write(b"".join((
                _pack(0, _HEAD_LEN, f.HEADERS, f.END_HEADERS, stream), RESPONSE_HEADERS,
                _pack(n >> 16, n & 0xFFFF, f.DATA, 0, stream), _PREFIX.pack(0, n - 5), data,
                _pack(0, _TRAILERS_LEN, f.HEADERS, f.END_HEADERS | f.END_STREAM, stream),
                OK_TRAILERS,
            )))
            self._finish(call)
            return
        self.transport.write(_pack(0, _HEAD_LEN, f.HEADERS, f.END_HEADERS, stream)
                             + RESPONSE_HEADERS)
        call.pending = memoryview(_PREFIX.pack(0, n - 5) + data)
        self._send(call)

    def refuse(self, call: Call, code: StatusCode, message: str, http: int = 200) -> None:
        """Answer `call` with an error (a Trailers-Only response)."""
        block = error_trailers(code, message, http)
        self.transport.write(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, call.id, block))
        self._finish(call)

    def _finish(self, call: Call) -> None:
        """The answer is sent: a client still sending its request is told to stop."""
        call.open = False
        if not call.ended:
            self.transport.write(f.rst_stream(call.id, f.NO_ERROR))
        self.done(call)

    def _reset(self, stream: int, code: int) -> None:
        """A stream error: RST_STREAM(code), and its call (if any) is over."""
        self.transport.write(f.rst_stream(stream, code))
        call = self.streams.get(stream)
        if call is not None:
            call.cancel()
            self.blocked.pop(stream, None)
            self.done(call)

    def _send(self, call: Call) -> None:
        """Send what the windows allow of the call's pending DATA; the trailers after the
        last of it, else the call waits in `blocked`."""
        pending, stream = call.pending, call.id
        out = []
        while pending:
            n = min(len(pending), self.send_window, call.send_window, self.max_frame)
            if n <= 0:
                break
            out.append(_pack(n >> 16, n & 0xFFFF, f.DATA, 0, stream))
            out.append(bytes(pending[:n]))
            pending = pending[n:]
            self.send_window -= n
            call.send_window -= n
        call.pending = pending
        if not pending:
            out.append(_pack(0, _TRAILERS_LEN, f.HEADERS, f.END_HEADERS | f.END_STREAM, stream))
            out.append(OK_TRAILERS)
            self.blocked.pop(stream, None)
        else:
            self.blocked[stream] = call
        if out:
            self.transport.write(b"".join(out))
        if not pending:
            self._finish(call)

    def pump(self) -> None:
        """Send what the windows now allow, oldest call first."""
        for call in list(self.blocked.values()):
            if self.send_window <= 0:
                break
            self._send(call)

    def credit(self, stream: int, increment: int) -> None:
        """A WINDOW_UPDATE: the connection's window (stream 0) or a stream's grows."""
        if increment == 0:
            if stream == 0:
                raise ConnectionFailure(f.PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            raise StreamError(stream, f.PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
        if stream == 0:
            self.send_window += increment
            if self.send_window > f.MAX_WINDOW:
                raise ConnectionFailure(f.FLOW_CONTROL_ERROR, "the window passed 2^31-1")
            self.pump()
            return
        call = self.streams.get(stream)
        if call is None:
            return
        call.send_window += increment
        if call.send_window > f.MAX_WINDOW:
            raise StreamError(stream, f.FLOW_CONTROL_ERROR, "the window passed 2^31-1")
        if stream in self.blocked:
            self._send(call)

    def initial_window(self, value: int) -> None:
        """The client's INITIAL_WINDOW_SIZE changed: every open stream's window moves by the
        difference (RFC 9113 6.9.2)."""
        delta = value - self.send_initial
        self.send_initial = value
        for call in self.streams.values():
            call.send_window += delta
