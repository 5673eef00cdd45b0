"""The eager accept reader: a burst of connections is accepted in one loop turn, even when every
turn is slow (uvloop's own listener takes one connection per turn)."""

from __future__ import annotations

import asyncio
import socket
import time

import uvloop

from serving.http.accept import EagerAccept

CONNECTIONS = 200
TURN_S = 0.02  # every loop turn holds the loop this long, as under overload


class _Counting(asyncio.Protocol):
    made: list[float] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _Counting.made.append(time.monotonic())


async def _burst(eager: bool) -> tuple[int, float]:
    """(connections made, seconds until the last one) for a burst arriving at a busy loop."""
    loop = asyncio.get_running_loop()
    _Counting.made = []
    server = await loop.create_server(_Counting, "127.0.0.1", 0, backlog=1024)
    accept = EagerAccept(loop, server.sockets, _Counting) if eager else None
    running = True

    def busy() -> None:
        time.sleep(TURN_S)
        if running:
            loop.call_soon(busy)

    loop.call_soon(busy)
    clients = []
    port = server.sockets[0].getsockname()[1]
    for _ in range(CONNECTIONS):  # the kernel completes loopback handshakes at once
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        clients.append(c)
    start = time.monotonic()
    deadline = start + 3.0
    while len(_Counting.made) < CONNECTIONS and time.monotonic() < deadline:
        await asyncio.sleep(0)
    running = False
    made = len(_Counting.made)
    took = (_Counting.made[-1] - start) if made else float("inf")
    if accept is not None:
        accept.close()
    server.close()
    for c in clients:
        c.close()
    return made, took


def test_a_burst_of_connections_is_accepted_within_a_few_busy_turns() -> None:
    made, took = uvloop.run(_burst(eager=True))
    assert made == CONNECTIONS
    assert took < 10 * TURN_S, f"{CONNECTIONS} connections took {took:.2f} s to accept"


def test_closing_releases_the_port() -> None:
    """The reader holds a duplicate of the listening descriptor: closing the server and the
    reader must stop listening on the port."""

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port: int = server.sockets[0].getsockname()[1]
        accept = EagerAccept(loop, server.sockets, asyncio.Protocol)
        accept.close()
        server.close()
        await server.wait_closed()
        return port

    port = uvloop.run(scenario())
    with socket.socket() as c:
        assert c.connect_ex(("127.0.0.1", port)) != 0
