"""Background tasks that never die silently: failures are logged, and the task starts again.

An `asyncio.Task` that raises keeps its exception to itself until someone awaits it, which a
server's long-lived tasks (loading, polling, readiness sampling, metrics snapshots) only do at
shutdown. `supervise` runs such a task's body again after each failure, with a growing delay so a
fault that persists (an unreadable directory, a full disk) costs a log line per delay, not a
busy loop. `spawn` is for one-shot tasks: their failure is logged when it happens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("serving.background")

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    first_delay_s: float = FIRST_DELAY_S,
    max_delay_s: float = MAX_DELAY_S,
) -> None:
    """Await `run()` until it returns; after each exception log it with its traceback and call
    `run()` again, first after `first_delay_s`, doubling up to `max_delay_s` (back to the first
    delay once a run has lasted longer than the longest delay). Cancellation passes through."""
    delay = first_delay_s
    while True:
        started = time.monotonic()
        try:
            await run()
            return
        except Exception:
            if time.monotonic() - started > max_delay_s:
                delay = first_delay_s  # it ran well for a while: this is a new fault
            log.exception("background task %r failed: restarting it in %g s", name, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay_s)


def spawn(
    tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None], name: str
) -> asyncio.Task[None]:
    """Start a one-shot task, keep a reference in `tasks` until it ends, and log its failure."""
    task = asyncio.create_task(coro, name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    task.add_done_callback(_log_failure)
    return task


def _log_failure(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task %r failed", task.get_name(), exc_info=exc)
