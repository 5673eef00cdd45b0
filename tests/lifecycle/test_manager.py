"""The model manager over a temporary registry, with fake sessions: no server, no ONNX Runtime.

Loading, failures kept to one model, draining with a timeout off the poll path, and what polling
notices (inode-aware fingerprints, new models logged as new).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from serving.lifecycle.manager import ModelManager
from serving.lifecycle.states import State
from serving.model_config import RuntimeConfig
from serving.registry.layout import CONFIG_FILE, MANIFEST_FILE
from serving.registry.manifest import Manifest, write_manifest
from serving.registry.routing_state import RoutingState, state_path, write_routing
from serving.signature import Signature
from serving.types import TensorSpec

T = TypeVar("T")
INPUTS = (TensorSpec("input", "FP32", (-1, 4)),)
OUTPUTS = (TensorSpec("label", "INT64", (-1,)),)
TOML = "[batching]\ninline_max_us = 0\n[versions]\ndrain_timeout_s = {timeout}\n"


class FakeSession:
    """What the scheduler needs of a session: a signature and a run that answers zeros."""

    providers = ("FakeExecutionProvider",)
    single_threaded = True

    def __init__(self, manifest: Manifest) -> None:
        self.signature = Signature(manifest.inputs, manifest.outputs)

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None) -> list[Any]:
        return [np.zeros(len(feeds["input"]), np.int64)]


class Loader:
    """A session loader: fake sessions, with a hook a test uses to fail or disturb a load."""

    def __init__(self, hook: Callable[[str, int], None] | None = None) -> None:
        self.hook = hook
        self.loaded: list[str] = []

    def __call__(self, path: Path, manifest: Manifest, runtime: RuntimeConfig,
                 threads: int) -> FakeSession:
        if self.hook is not None:
            self.hook(manifest.name, manifest.version)
        self.loaded.append(f"{manifest.name}:{manifest.version}")
        return FakeSession(manifest)


class StuckScheduler:
    """A scheduler whose drain never finishes (a run that never returns)."""

    queued = 0
    in_flight = 1

    def __init__(self) -> None:
        self.closed = False

    async def drain(self) -> None:
        await asyncio.Event().wait()

    def close(self) -> None:
        self.closed = True


def publish(root: Path, name: str, version: int, drain_timeout_s: float = 5.0) -> None:
    d = root / name / str(version)
    d.mkdir(parents=True)
    (d / "model.onnx").write_bytes(b"not read by the fake loader")
    write_manifest(d / MANIFEST_FILE, Manifest(name, version, "0" * 64, INPUTS, OUTPUTS))
    toml = root / name / CONFIG_FILE
    if not toml.exists():
        toml.write_text(TOML.format(timeout=drain_timeout_s))


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


async def closing(manager: ModelManager, body: Callable[[], Awaitable[None]]) -> None:
    try:
        await body()
    finally:
        await manager.shutdown()


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    for name in ("a", "b", "c"):
        publish(root, name, 1)
    return root


def state(manager: ModelManager, name: str, version: int) -> State | None:
    mv = manager.models[name].versions.get(version)
    return None if mv is None else mv.state


def test_loads_every_model_and_serves_the_highest_version(registry: Path) -> None:
    publish(registry, "a", 2)
    loader = Loader()
    manager = ModelManager(str(registry), session_loader=loader)

    async def body() -> None:
        await manager.load_all()
        assert manager.ready() and manager.not_ready_reason() == ""
        assert manager.get_version("a", None).version == 2  # latest-1 policy
        assert sorted(loader.loaded) == ["a:2", "b:1", "c:1"]
        assert manager.models["a"].primary is manager.find_version("a", "2")

    run(closing(manager, body))


def test_a_version_whose_load_raises_is_failed_and_the_others_load(registry: Path) -> None:
    def hook(name: str, version: int) -> None:
        if name == "a":  # the first one loaded: it used to stop all the others
            raise RuntimeError("the runtime crashed")

    manager = ModelManager(str(registry), session_loader=Loader(hook))

    async def body() -> None:
        await manager.load_all()
        assert manager.loading_done
        assert state(manager, "b", 1) is State.READY and state(manager, "c", 1) is State.READY
        assert state(manager, "a", 1) is State.FAILED  # not left LOADING for ever
        assert not manager.ready(strict=True) and manager.ready(strict=False)
        why = manager.not_ready_reason()
        assert why.startswith("model a has no ready version") and "the runtime crashed" in why
        assert {"name": "a", "version": "1", "state": "FAILED",
                "reason": "the runtime crashed"} in manager.index()

    run(closing(manager, body))


def test_an_unreadable_model_directory_fails_that_model_only(
    registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = ModelManager(str(registry), session_loader=Loader())
    versions = manager.layout.versions

    def unreadable(name: str) -> list[int]:  # as iterdir on a directory with mode 000
        if name == "b":
            raise PermissionError(13, "Permission denied", str(registry / "b"))
        return versions(name)

    monkeypatch.setattr(manager.layout, "versions", unreadable)

    async def body() -> None:
        await manager.load_all()
        assert manager.loading_done
        assert state(manager, "a", 1) is State.READY and state(manager, "c", 1) is State.READY
        assert "Permission denied" in manager.models["b"].reason
        b = [e for e in manager.index() if e["name"] == "b"]
        assert b == [{"name": "b", "version": "", "state": "FAILED",
                      "reason": manager.models["b"].reason}]

    run(closing(manager, body))


def test_a_model_removed_while_loading_does_not_stop_the_others(registry: Path) -> None:
    def hook(name: str, version: int) -> None:
        if name == "a":
            shutil.rmtree(registry / "b")  # vanishes between the listing and its load

    manager = ModelManager(str(registry), session_loader=Loader(hook))

    async def body() -> None:
        await manager.load_all()
        assert manager.loading_done and manager.ready()
        assert state(manager, "c", 1) is State.READY
        assert "b" not in manager.models

    run(closing(manager, body))


def test_a_registry_that_cannot_be_listed_raises_and_readiness_says_why(
    registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = ModelManager(str(registry), session_loader=Loader())
    monkeypatch.setattr(manager.layout, "model_names", _raise_permission)

    async def body() -> None:
        with pytest.raises(PermissionError):
            await manager.load_all()
        assert not manager.ready()
        assert "the last attempt failed" in manager.not_ready_reason()

    run(closing(manager, body))


def _raise_permission() -> list[str]:
    raise PermissionError(13, "Permission denied")


def test_a_stuck_drain_times_out_and_never_holds_up_polling(registry: Path) -> None:
    shutil.rmtree(registry / "a")
    publish(registry, "a", 1, drain_timeout_s=1.0)
    manager = ModelManager(str(registry), session_loader=Loader())

    async def body() -> None:
        await manager.load_all()
        stuck = StuckScheduler()
        mv = manager.get_version("a", "1")
        real = mv.scheduler
        assert real is not None
        mv.scheduler = stuck  # type: ignore[assignment]
        real.close()
        shutil.rmtree(registry / "a")  # a leaves the registry: its version drains ...
        publish(registry, "b", 2)  # ... while b's new version must still be picked up
        started = time.monotonic()
        await asyncio.wait_for(manager.poll_once(), 5.0)
        assert manager.get_version("b", None).version == 2
        assert mv.state is State.DRAINING and not stuck.closed  # nothing waited for a's drain
        await until(lambda: mv.state is State.UNLOADED)
        assert stuck.closed  # closed at the timeout, though it never drained
        assert time.monotonic() - started >= 1.0

    run(closing(manager, body))


def test_unload_drains_every_version_at_once_within_the_timeout(registry: Path) -> None:
    shutil.rmtree(registry / "a")
    publish(registry, "a", 1, drain_timeout_s=0.5)
    publish(registry, "a", 2)
    toml = registry / "a" / CONFIG_FILE
    toml.write_text(toml.read_text() + 'policy = "all"\n')
    manager = ModelManager(str(registry), session_loader=Loader())

    async def body() -> None:
        await manager.load_all()
        stuck = [StuckScheduler(), StuckScheduler()]
        for mv, fake in zip(manager.models["a"].versions.values(), stuck, strict=True):
            assert mv.scheduler is not None
            mv.scheduler.close()
            mv.scheduler = fake  # type: ignore[assignment]
        started = time.monotonic()
        await manager.unload_model("a")
        elapsed = time.monotonic() - started
        assert 0.5 <= elapsed < 0.95, elapsed  # one timeout, not one per version
        assert all(s.closed for s in stuck)
        assert manager.models["a"].versions == {} and manager.models["a"].unloaded

    run(closing(manager, body))


def test_a_new_version_retires_the_old_one_in_the_background(registry: Path) -> None:
    manager = ModelManager(str(registry), session_loader=Loader())

    async def body() -> None:
        await manager.load_all()
        old = manager.get_version("a", "1")
        publish(registry, "a", 2)
        await manager.poll_once()
        assert manager.get_version("a", None).version == 2
        await until(lambda: old.state is State.UNLOADED and 1 not in manager.models["a"].versions)
        assert old.scheduler is None and old.session is None

    run(closing(manager, body))


def _same_size_same_mtime_replace(path: Path, data: bytes) -> None:
    """An atomic replace that keeps the size and the timestamp (a rewrite within the clock's
    granularity, or a tool that preserves mtimes)."""
    st = path.stat()
    assert len(data) == st.st_size
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)


def test_fingerprint_sees_a_same_size_same_mtime_rewrite(registry: Path) -> None:
    manager = ModelManager(str(registry), session_loader=Loader())
    toml = registry / "a" / CONFIG_FILE
    before = manager.fingerprint("a")
    _same_size_same_mtime_replace(toml, toml.read_bytes().replace(b"= 5.0", b"= 6.0"))
    assert b"drain_timeout_s = 6.0" in toml.read_bytes()
    assert manager.fingerprint("a") != before

    write_routing(registry, "a", RoutingState(primary=1))
    before = manager.fingerprint("a")
    path = state_path(registry, "a")
    _same_size_same_mtime_replace(path, path.read_bytes())
    assert manager.fingerprint("a") != before


def test_polling_logs_a_new_model_as_new(registry: Path, caplog: pytest.LogCaptureFixture) -> None:
    manager = ModelManager(str(registry), session_loader=Loader())

    async def body() -> None:
        await manager.load_all()
        publish(registry, "d", 1)
        publish(registry, "a", 2)
        with caplog.at_level(logging.INFO, logger="serving.lifecycle"):
            await manager.poll_once()
        assert state(manager, "d", 1) is State.READY
        messages = [r.getMessage() for r in caplog.records]
        assert "new model d in the registry: loading" in messages
        assert "registry changed for model d: reloading" not in messages
        assert "registry changed for model a: reloading" in messages

    run(closing(manager, body))
