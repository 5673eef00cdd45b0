"""supervise and spawn: a background task's failure is logged and the task runs again."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from serving.lifecycle.background import spawn, supervise


def test_a_failing_task_is_logged_and_restarted_with_a_growing_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[float] = []

    async def flaky() -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) < 4:
            raise OSError(28, "No space left on device")

    with caplog.at_level(logging.ERROR, logger="serving.background"):
        asyncio.run(asyncio.wait_for(supervise("snapshots", flaky, 0.01, 0.04), 5))
    assert len(calls) == 4  # returned normally on the fourth run: not started again
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.009 and gaps[1] >= 0.019 and gaps[2] >= 0.039  # 0.01, 0.02, 0.04
    failures = [r for r in caplog.records if "background task 'snapshots' failed" in r.message]
    assert len(failures) == 3
    assert all(r.exc_info and "No space left" in str(r.exc_info[1]) for r in failures)


def test_cancellation_passes_through() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        task = asyncio.create_task(supervise("watch", forever))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_spawn_logs_a_one_shot_failure(caplog: pytest.LogCaptureFixture) -> None:
    tasks: set[asyncio.Task[None]] = set()

    async def boom() -> None:
        raise RuntimeError("drain failed")

    async def main() -> None:
        task = spawn(tasks, boom(), "retire m:1")
        assert task in tasks
        await asyncio.wait([task])
        await asyncio.sleep(0)  # done callbacks run
        assert not tasks

    with caplog.at_level(logging.ERROR, logger="serving.background"):
        asyncio.run(main())
    assert any("background task 'retire m:1' failed" in r.message for r in caplog.records)
