"""Shared fixtures: example models built from scikit-learn's bundled data, and a real server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving.packaging.examples import build_examples

# Fixtures that build the example models or start a real server: a test that uses one belongs to
# the slow lane whatever folder it lives in.
_E2E_FIXTURES = frozenset({"models_dir", "server", "client", "registry_copy"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the slow lane: everything under tests/e2e/, and every test using a server fixture.
    Tests elsewhere that start processes themselves carry `pytest.mark.e2e` explicitly."""
    e2e_dir = Path(__file__).parent / "e2e"
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.path.is_relative_to(e2e_dir) or fixtures & _E2E_FIXTURES:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with the four example models and `alltypes`, built once per test session."""
    from tests.e2e.models import ONNX_TYPES, identity_model, publish

    root = tmp_path_factory.mktemp("registry")
    build_examples(root, only_missing=True, log=lambda _msg: None)
    publish(root, "alltypes", identity_model(list(ONNX_TYPES)))
    return root


class RunningServer:
    """A `serving serve` process on a free loopback port."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path
        self.port = int(url.rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
        return self.proc.returncode


@contextlib.contextmanager
def run_server(
    registry: Path, tmp_path: Path, *args: str, wait_ready: bool = True,
    env: dict[str, str] | None = None, cwd: Path | None = None,
) -> Iterator[RunningServer]:
    """Start a real server process; stop it (by its PID) when the block ends."""
    ready_file = tmp_path / f"ready-{time.monotonic_ns()}"
    log_path = tmp_path / f"server-{time.monotonic_ns()}.log"
    cmd = [
        # -P: as the installed `serving` command, never import a `serving/` folder in the cwd
        sys.executable, "-P", "-m", "serving", "serve", "--registry", str(registry),
        "--host", "127.0.0.1", "--port", "0", "--ready-file", str(ready_file), *args,
    ]
    # Test servers stop at once on SIGTERM unless a test asks for a drain grace period.
    # and without gRPC (its default port 8001 would be shared by every test server) unless asked
    full_env = {**os.environ, "SERVING_DRAIN_GRACE": "0", "SERVING_GRPC_PORT": "0", **(env or {})}
    # This source tree, whatever the cwd (-P keeps the cwd off sys.path)
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), full_env.get("PYTHONPATH")) if p)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd)
    server = None
    try:
        deadline = time.monotonic() + 60
        while not ready_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        host, port = ready_file.read_text().split()
        server = RunningServer(proc, f"http://{host}:{port}", log_path)
        if wait_ready:
            wait_until_ready(server.url)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


class ClientThreads:
    """Clients that send requests from threads until the block ends; subclasses define `run`."""

    def __init__(self, url: str, clients: int = 4) -> None:
        import threading

        self.url = url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(clients)]

    def run(self, index: int) -> None:
        raise NotImplementedError

    def __enter__(self):  # type: ignore[no-untyped-def]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def wait_for(predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    """Poll `predicate` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.05)


def wait_until_ready(url: str, path: str = "/v2/health/ready", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=5) as c:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if c.get(path).status_code == 200:
                    return
            time.sleep(0.05)
    raise RuntimeError(f"{url}{path} never became ready")


@pytest.fixture(scope="session")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real server over the example registry, shared by the e2e tests."""
    with run_server(models_dir, tmp_path_factory.mktemp("server")) as s:
        yield s


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def copy_registry(src: Path, dst: Path) -> Path:
    """A copy of a registry for a server of its own: without the rollout controller's lease,
    which a server on the original (the session's `server`) holds and keeps renewing there."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("_controller.lease*"))
    return dst


@pytest.fixture
def registry_copy(models_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the example registry that a test may damage."""
    return copy_registry(models_dir, tmp_path / "registry")
