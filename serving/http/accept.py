"""Accept every pending connection in one loop turn.

uvloop's listener (libuv 1.52) accepts ONE connection per event-loop turn. Under overload a turn
takes tens of milliseconds, so a burst of new connections (1000 clients connecting at once) waits
in the kernel's accept queue for seconds, and their first requests make the whole latency tail:
measured with 1000 keep-alive clients on one core, 200-300 connections sat in the accept queue
for up to 7 s (p99 6-7 s) while every request the server had read was answered within 0.5 s.
This reader drains the accept queue each turn (as asyncio's own loop does, up to the backlog)
and hands each socket to the loop like the listener would.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Iterable

log = logging.getLogger("serving")

# At most this many accepts per turn: a flood cannot hold the loop for longer than that.
ACCEPT_BATCH = 1024


class EagerAccept:
    """A reader on (a duplicate of) each TCP listening socket that accepts all that is pending."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, listeners: Iterable[socket.socket],
        factory: Callable[[], asyncio.Protocol], batch: int = ACCEPT_BATCH,
    ) -> None:
        self._loop = loop
        self._factory = factory
        self._batch = batch
        self._tasks: set[asyncio.Task[object]] = set()
        self._socks: list[socket.socket] = []
        for listener in listeners:
            if listener.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            # A duplicate descriptor: the loop's own listener keeps polling the original.
            sock = socket.socket(fileno=os.dup(listener.fileno()))
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._accept, sock)
            self._socks.append(sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(self._batch):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:  # EMFILE and friends: the loop's listener reports them too
                log.warning("accept failed: %s", exc)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self._loop.create_task(self._connect(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket) -> object:
        try:
            return await self._loop.connect_accepted_socket(self._factory, conn)
        except OSError:  # the client went away between accept and here
            conn.close()
            return None

    def close(self) -> None:
        """Stop accepting (the server is shutting down)."""
        for sock in self._socks:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        self._socks.clear()
