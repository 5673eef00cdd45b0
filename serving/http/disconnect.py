"""Asking, without awaiting, whether a request's client went away (so the batcher can drop its
rows before running them).

uvicorn's request cycle keeps a `disconnected` flag that `receive` is a bound method of: reading
it costs an attribute lookup. It is private API, so it is used only here, only when it looks as
expected (tests/http/test_disconnect.py fails loudly when an uvicorn upgrade moves it), and any
other server gets the public ASGI way: once the body is read, `receive()` returns only with
`http.disconnect`, so a task awaiting it says when the client left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.types import Message, Receive


def uvicorn_cycle(receive: Receive) -> Any | None:
    """uvicorn's RequestResponseCycle behind `receive`, if it still has its `disconnected` flag."""
    cycle = getattr(receive, "__self__", None)
    if cycle is not None and isinstance(getattr(cycle, "disconnected", None), bool):
        return cycle
    return None


class ReceiveWatcher:
    """The public fallback: the first call starts awaiting `receive()`; later calls say whether
    it returned `http.disconnect`. Call it only after the request body has been read."""

    __slots__ = ("_receive", "_task")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task: asyncio.Future[Message] | None = None

    def __call__(self) -> bool:
        task = self._task
        if task is None:
            task = self._task = asyncio.ensure_future(self._receive())
        if not task.done() or task.cancelled() or task.exception() is not None:
            return False
        return bool(task.result().get("type") == "http.disconnect")


def disconnect_probe(receive: Receive) -> Callable[[], bool]:
    """A callable that is True once the client of this request has gone."""
    cycle = uvicorn_cycle(receive)
    if cycle is not None:
        return lambda: bool(cycle.disconnected)
    return ReceiveWatcher(receive)
