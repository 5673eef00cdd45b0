"""`serve --workers N`: N worker processes on one port, kept alive by a supervisor.

Each worker is a whole server (its own models, batchers and event loop) listening on the shared
port with SO_REUSEPORT, so the kernel spreads connections across workers. Workers also listen on
a private Unix socket in the supervisor's run directory; that is how one worker reaches its
siblings: admin load/unload requests fan out to every worker, rollout requests go to worker 0
(the only one running the rollout controller; the others follow the routing state it writes to
the registry by polling), and metrics snapshots meet in the run directory (see
`serving.monitoring.multiprocess`).

The supervisor restarts a worker that dies (logged, with backoff when it keeps dying), forwards
SIGTERM and SIGINT to all workers, waits for them to drain, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.config import ServerConfig

log = logging.getLogger("serving.workers")

SPEC_ENV = "SERVING_WORKER_SPEC"
INTERNAL_HEADER = "x-serving-worker"
FOLLOWER_POLL_S = 1.0  # workers follow worker 0's routing changes at least this often


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker knows about its siblings."""

    index: int
    count: int
    run_dir: str
    secret: str  # marks requests between workers (so they are not fanned out again)

    def socket_path(self, index: int) -> str:
        return os.path.join(self.run_dir, f"worker-{index}.sock")

    def ready_path(self, index: int) -> Path:
        return Path(self.run_dir) / f"worker-{index}.ready"

    @property
    def metrics_dir(self) -> Path:
        return Path(self.run_dir) / "metrics"

    @property
    def siblings(self) -> list[int]:
        return [i for i in range(self.count) if i != self.index]

    def is_internal(self, headers: Any) -> bool:
        given = headers.get(INTERNAL_HEADER, "")
        return bool(given) and secrets.compare_digest(given, self.secret)


def listen_socket(host: str, port: int, listen: bool = True) -> socket.socket:
    """A TCP socket on (host, port) with SO_REUSEPORT, so several processes share the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
        sock.set_inheritable(True)
    return sock


def unix_socket(path: str) -> socket.socket:
    if os.path.exists(path):
        os.unlink(path)  # a previous incarnation of this worker
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(64)
    return sock


# ---- requests between workers ------------------------------------------------------------------


async def call_worker(
    spec: WorkerSpec, index: int, method: str, path: str, headers: dict[str, str],
    body: bytes, timeout: float = 60.0,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request to a sibling over its Unix socket: (status, body)."""
    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_unix_connection(spec.socket_path(index))
        try:
            head = [f"{method} {path} HTTP/1.1", "host: worker", "connection: close",
                    f"content-length: {len(body)}", f"{INTERNAL_HEADER}: {spec.secret}"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        status_line, _, rest = raw.partition(b"\r\n")
        _, _, payload = rest.partition(b"\r\n\r\n")
        return int(status_line.split()[1]), payload

    return await asyncio.wait_for(go(), timeout)


def forwarded_headers(headers: Any) -> dict[str, str]:
    out = {}
    for name in ("authorization", "content-type"):
        value = headers.get(name)
        if value:
            out[name] = value
    return out


# ---- the worker process ------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervisor dies, even of SIGKILL, so no orphan
    keeps serving the port."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def worker_main() -> int:
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        return 1
    doc = json.loads(os.environ.pop(SPEC_ENV))
    spec = WorkerSpec(**doc["spec"])
    config = ServerConfig(**doc["config"])
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s %(levelname)s worker-{spec.index} %(name)s: %(message)s",
    )
    from serving.http.server import run_server

    return run_server(config, spec)


# ---- the supervisor ----------------------------------------------------------------------------


class Supervisor:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.count = config.worker_count()
        self.run_dir = tempfile.mkdtemp(prefix="serving-workers-")
        self.secret = secrets.token_hex(16)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.stop_signal: int | None = None
        self.failures = [0] * self.count
        self.restart_at = [0.0] * self.count

    def _spawn(self, index: int, port: int) -> None:
        spec = WorkerSpec(index, self.count, self.run_dir, self.secret)
        poll = self.config.poll
        if poll <= 0 or poll > FOLLOWER_POLL_S:
            poll = FOLLOWER_POLL_S if poll <= 0 else poll
        worker_config = dataclasses.replace(
            self.config, port=port, workers="1", ready_file="", build_examples=False, poll=poll
        )
        doc = {"spec": dataclasses.asdict(spec), "config": dataclasses.asdict(worker_config)}
        spec.ready_path(index).unlink(missing_ok=True)
        env = {**os.environ, SPEC_ENV: json.dumps(doc)}
        # A session of its own: a terminal's Ctrl-C reaches the supervisor only, which passes
        # it on once (a second SIGINT would make uvicorn skip finishing in-flight requests).
        self.procs[index] = subprocess.Popen(
            [sys.executable, "-m", "serving.http.workers"], env=env, start_new_session=True
        )
        log.info("worker %d started (pid %d)", index, self.procs[index].pid)

    def _on_signal(self, sig: int, frame: Any) -> None:
        if self.stop_signal is None:
            self.stop_signal = sig
        for proc in list(self.procs.values()):
            if proc.poll() is None:
                proc.send_signal(sig)

    def run(self) -> int:
        # Holding the port (bound, not listening: the kernel gives connections only to
        # listening sockets) resolves port 0 and keeps it ours while workers come and go.
        holder = listen_socket(self.config.host, self.config.port, listen=False)
        port = holder.getsockname()[1]
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        Path(self.run_dir, "metrics").mkdir()
        try:
            for i in range(self.count):
                self._spawn(i, port)
            if not self._wait_started():
                return 1
            log.info("%d workers serving on http://%s:%d", self.count, self.config.host, port)
            if self.config.ready_file:
                tmp = Path(self.config.ready_file + ".tmp")
                tmp.write_text(f"{self.config.host} {port}\n")
                os.replace(tmp, self.config.ready_file)
            while self.stop_signal is None:
                self._restart_dead(port)
                time.sleep(0.2)
            return self._stop()
        finally:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
            holder.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _wait_started(self) -> bool:
        spec = WorkerSpec(0, self.count, self.run_dir, self.secret)
        while self.stop_signal is None:
            for i, proc in self.procs.items():
                if proc.poll() is not None:
                    log.error("worker %d exited during startup (status %s); stopping",
                              i, proc.returncode)
                    self._on_signal(signal.SIGTERM, None)
                    self._stop()
                    return False
            if all(spec.ready_path(i).exists() for i in range(self.count)):
                return True
            time.sleep(0.05)
        self._stop()  # signalled while starting
        return False

    def _restart_dead(self, port: int) -> None:
        now = time.monotonic()
        for i, proc in list(self.procs.items()):
            if proc.poll() is None:
                continue
            if self.restart_at[i] == 0.0:
                # Backoff: at once the first time, then 0.5 s doubling to 30 s while it keeps
                # dying within a minute of its start.
                delay = 0.0 if self.failures[i] == 0 else min(30.0, 0.5 * 2 ** self.failures[i])
                log.error("worker %d (pid %d) died with status %s; restarting in %.1f s",
                          i, proc.pid, proc.returncode, delay)
                self.restart_at[i] = now + delay
            if now >= self.restart_at[i]:
                self.restart_at[i] = 0.0
                self.failures[i] += 1
                self._spawn(i, port)
                self.procs[i].started_at = now  # type: ignore[attr-defined]
        for i, proc in self.procs.items():
            started = getattr(proc, "started_at", None)
            if started is not None and now - started > 60 and proc.poll() is None:
                self.failures[i] = 0

    def _stop(self) -> int:
        """Wait for the signalled workers: their drain grace, then in-flight requests."""
        deadline = time.monotonic() + self.config.drain_grace + 45
        for i, proc in self.procs.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in time; killing it", i)
                proc.kill()
                proc.wait(5)
        log.info("all workers stopped")
        return 0


def supervise(config: ServerConfig) -> int:
    return Supervisor(config).run()


if __name__ == "__main__":
    sys.exit(worker_main())
