"""Sending an inference response in one transport write: one send syscall, not two.

uvicorn's request cycle writes the status line and headers on `http.response.start` and the
body on `http.response.body`: two writes, so two `send` syscalls per response, which was about a
sixth of a loaded server's samples with 64 one-row clients. While the inference endpoint sends
its two messages, `cork_response` stands a `Cork` in for the cycle's transport: it holds the
head and hands head and body to the transport's `writelines` together (one `writev` under
uvloop, one joined write under asyncio). The cycle still does all the HTTP work (headers,
keep-alive, pipelining, HEAD, closing).

The cycle's `transport` attribute is private API, so it is used only here, only when it looks
as expected (tests/http/test_onewrite.py fails loudly when an uvicorn upgrade moves it); any
other server gets `None` and the two plain writes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Send


class Cork:
    """The transport as the cycle sees it while one response is sent."""

    __slots__ = ("_cycle", "_head", "_transport")

    def __init__(self, cycle: Any, transport: asyncio.Transport) -> None:
        self._cycle = cycle
        self._transport = transport
        self._head = b""

    def write(self, data: bytes) -> None:
        head = self._head
        if head:
            self._head = b""
            self._transport.writelines((head, data))
        else:
            self._head = data  # the status line and headers: held for the body

    def flush(self) -> None:
        head = self._head
        if head:  # a response with no body write (HEAD), or whose client left after its start
            self._head = b""
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # anything else the cycle may ask of a transport
        return getattr(self._transport, name)

    def release(self) -> None:
        """Give the cycle its transport back, writing anything still held."""
        self._cycle.transport = self._transport
        self.flush()


def cork_response(send: Send) -> Cork | None:
    """Cork uvicorn's cycle behind `send` for one response, if it looks as expected; call
    `release()` on the result once the response is sent."""
    cycle: Any = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None or not hasattr(transport, "writelines") or not isinstance(
        getattr(cycle, "response_started", None), bool
    ):
        return None
    cork = Cork(cycle, transport)
    cycle.transport = cork
    return cork
