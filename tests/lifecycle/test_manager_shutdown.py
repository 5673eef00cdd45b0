"""A load still running in its thread when the server shuts down starts nothing afterwards."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from serving.lifecycle.manager import ModelManager
from serving.lifecycle.states import State
from serving.runtime.session import load_session
from tests.e2e.models import identity_model, publish


def test_a_load_in_flight_at_shutdown_is_abandoned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publish(tmp_path, "ident", identity_model(["FP32"]))
    entered, release = threading.Event(), threading.Event()
    real = load_session

    def held_load(*args: Any, **kwargs: Any) -> Any:  # the real load, held at its start
        entered.set()
        release.wait(10)
        return real(*args, **kwargs)

    async def scenario() -> State:
        manager = ModelManager(str(tmp_path), session_loader=held_load)
        loading = asyncio.create_task(manager.load_all())
        assert await asyncio.to_thread(entered.wait, 10)
        loading.cancel()  # what the lifespan does at shutdown
        await asyncio.gather(loading, return_exceptions=True)
        await manager.shutdown()
        release.set()
        mv = manager.models["ident"].versions[1]
        deadline = time.monotonic() + 10
        while mv.state is State.LOADING:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        return mv.state

    with caplog.at_level(logging.INFO, logger="serving"):
        assert asyncio.run(scenario()) is State.FAILED
    assert "ready in" not in caplog.text
    assert "load abandoned: the server is shutting down" in caplog.text
