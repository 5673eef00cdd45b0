"""One gRPC call (an HTTP/2 stream): what the connection holds about it, and the context its
handler gets (grpcio's `ServicerContext`'s four methods the handlers use)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from time import monotonic
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.grpc_api.headers import Head, Metadata


Handler = Callable[[Any, "Call"], Coroutine[Any, Any, Any]]
Methods = dict[str, tuple[Handler, Callable[[bytes], Any]]]  # :path -> (handler, parser)


class Call:
    """A call from its HEADERS to its trailers. Written on the loop only."""

    __slots__ = ("chunks", "deadline", "ended", "expect", "head", "id", "open", "peer_address",
                 "pending", "send_window", "size", "task")

    def __init__(self, stream: int, head: Head, send_window: int, peer: str) -> None:
        self.id = stream
        self.head = head
        self.deadline = None if head.timeout is None else monotonic() + head.timeout
        self.chunks: list[bytes] = []  # the request's DATA so far
        self.size = 0  # their bytes
        self.expect = -1  # the message's bytes with its 5-byte prefix, once the prefix is in
        self.ended = False  # the client has sent END_STREAM
        self.open = True  # False once answered, reset by the client, or its connection lost
        self.task: asyncio.Task[Any] | None = None
        self.send_window = send_window  # what the client lets us send on this stream
        self.pending = memoryview(b"")  # response DATA waiting for the client's windows
        self.peer_address = peer

    def body(self) -> bytes:
        """The request's bytes (one chunk: itself, never copied)."""
        if len(self.chunks) != 1:
            self.chunks = [b"".join(self.chunks)]
        return self.chunks[0]

    def cancel(self) -> None:
        """The call is over for the client (reset, or its connection gone): stop its handler."""
        self.open = False
        if self.task is not None:
            self.task.cancel()

    # ---- the handler's context ---------------------------------------------------------------

    def invocation_metadata(self) -> Metadata:
        """The request's custom metadata as (key, value) pairs (`-bin` values as bytes)."""
        return self.head.metadata

    def time_remaining(self) -> float | None:
        """Seconds left before the client's deadline (grpc-timeout); None without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - monotonic())

    def is_active(self) -> bool:
        """Whether the client still waits for the answer."""
        return self.open and (self.deadline is None or monotonic() < self.deadline)

    def gone(self) -> bool:
        """Whether the client no longer waits (the data plane's disconnect probe)."""
        return not self.is_active()

    def peer(self) -> str:
        """The client's address as grpc writes it ("ipv4:127.0.0.1:5000")."""
        return self.peer_address
