"""The disconnect probe: uvicorn's private flag (fails loudly if an upgrade moves it) and the
public ASGI fallback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.types import Message, Receive, Scope, Send

from serving.http.disconnect import ReceiveWatcher, disconnect_probe, uvicorn_cycle

seen: dict[str, Any] = {}


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the body, then waits (up to 10 s) for the probe to see the client leave."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    probe = disconnect_probe(receive)
    seen["uvicorn"] = uvicorn_cycle(receive) is not None
    seen["before"] = probe()
    seen["arrived"].set()
    deadline = time.monotonic() + 10
    while not probe() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    seen["after"] = probe()
    seen["done"].set()


@pytest.fixture
def uvicorn_server() -> Iterator[int]:
    config = uvicorn.Config(_app, host="127.0.0.1", port=0, loop="asyncio", http="httptools",
                            ws="none",
                            lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)


def test_uvicorn_still_has_the_private_disconnected_flag(uvicorn_server: int) -> None:
    # If this fails after an uvicorn upgrade, the fast probe silently became the fallback:
    # update serving/http/disconnect.py (uvicorn_cycle) for the new uvicorn.
    seen.update(arrived=threading.Event(), done=threading.Event())
    with socket.create_connection(("127.0.0.1", uvicorn_server), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        assert seen["arrived"].wait(10)
    assert seen["done"].wait(15)
    assert seen["uvicorn"], f"uvicorn {uvicorn.__version__} moved RequestResponseCycle.disconnected"
    assert seen["before"] is False and seen["after"] is True


def test_the_public_fallback_sees_http_disconnect() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        messages: asyncio.Queue[Message] = asyncio.Queue()

        async def receive() -> Message:  # a plain function: no uvicorn cycle behind it
            return await messages.get()

        probe = disconnect_probe(receive)
        assert isinstance(probe, ReceiveWatcher)
        first = probe()
        await asyncio.sleep(0)
        still = probe()
        await messages.put({"type": "http.disconnect"})
        deadline = time.monotonic() + 5
        while not probe() and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        return first, still, probe()

    assert asyncio.run(scenario()) == (False, False, True)
