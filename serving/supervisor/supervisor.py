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
from pathlib import Path
from types import FrameType

from serving.config import ServerConfig
from serving.http.server import GRACEFUL_SHUTDOWN_S
from serving.http.siblings import WorkerSpec, reuseport_socket
from serving.supervisor.worker import SPEC_ENV

log = logging.getLogger("serving.workers")

FOLLOWER_POLL_S = 1.0  # workers follow worker 0's routing changes at least this often


def claim_port(host: str, port: int) -> socket.socket:
    """Bind (host, port) for a set of workers, failing with EADDRINUSE as a single server
    would when something already listens there (with SO_REUSEPORT alone, a second `serve
    --workers` would silently share the port). Returns a socket that holds the port, bound
    but not listening: the kernel hands connections only to listening sockets."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    return reuseport_socket(host, port)


class Supervisor:
    """Starts the workers, restarts those that die, passes signals on, waits for the drain."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.count = config.worker_count()
        self.secret = secrets.token_hex(16)
        self.run_dir = ""
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started_at = [0.0] * self.count
        self.failures = [0] * self.count  # deaths in a row, each within a minute of its start
        self.restart_at: list[float | None] = [None] * self.count
        self.received: list[int] = []  # signals not yet passed on to the workers
        self.stopping = False

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.received.append(sig)  # a signal handler: record only; the main loop acts

    def _pass_on_signals(self) -> None:
        while self.received:
            sig = self.received.pop(0)
            self.stopping = True
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.send_signal(sig)

    def _spawn(self, index: int, port: int) -> None:
        spec = WorkerSpec(index, self.count, self.run_dir, self.secret)
        poll = min(self.config.poll, FOLLOWER_POLL_S) if self.config.poll > 0 else FOLLOWER_POLL_S
        worker_config = dataclasses.replace(
            self.config, port=port, workers="1", ready_file="", build_examples=False, poll=poll
        )
        doc = {"spec": dataclasses.asdict(spec), "config": dataclasses.asdict(worker_config)}
        spec.ready_path(index).unlink(missing_ok=True)
        env = {**os.environ, SPEC_ENV: json.dumps(doc)}
        # A session of its own: a terminal's Ctrl-C reaches the supervisor only, which passes
        # it on once (a second SIGINT would make uvicorn skip finishing in-flight requests).
        # -P: `-m` would put the current directory first on sys.path, and a `serving/` folder
        # there (a source checkout, without its compiled kernels) would shadow the installed
        # package the supervisor itself runs from.
        self.procs[index] = subprocess.Popen(
            [sys.executable, "-P", "-m", "serving.supervisor.worker"], env=env,
            start_new_session=True,
        )
        self.started_at[index] = time.monotonic()
        log.info("worker %d started (pid %d)", index, self.procs[index].pid)

    def _claim_ports(self) -> list[socket.socket] | None:
        """Hold the HTTP port and the gRPC port (when on) for the workers; None (logged) when
        either is taken."""
        held: list[socket.socket] = []
        for what, port in (("", self.config.port), ("gRPC ", self.config.grpc_port)):
            if what and not port:
                continue
            try:
                held.append(claim_port(self.config.host, port))
            except OSError as exc:
                log.error("cannot serve %son %s:%d: %s", what, self.config.host, port,
                          exc.strerror or exc)
                for sock in held:
                    sock.close()
                return None
        return held

    def run(self) -> int:
        held = self._claim_ports()
        if held is None:
            return 1
        port = held[0].getsockname()[1]
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.run_dir = tempfile.mkdtemp(prefix="serving-workers-")
        Path(self.run_dir, "metrics").mkdir()
        try:
            for i in range(self.count):
                self._spawn(i, port)
            started = self._wait_started()
            if started is False:
                self.received.append(signal.SIGTERM)
                self._pass_on_signals()
                self._stop()
                return 1
            if started:
                log.info("%d workers serving on http://%s:%d", self.count, self.config.host,
                         port)
                if self.config.ready_file:
                    tmp = Path(self.config.ready_file + ".tmp")
                    tmp.write_text(f"{self.config.host} {port}\n")
                    os.replace(tmp, self.config.ready_file)
            while True:
                self._pass_on_signals()
                if self.stopping:
                    return self._stop()
                self._restart_dead(port)
                time.sleep(0.2)
        finally:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
            for sock in held:
                sock.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _wait_started(self) -> bool | None:
        """True once every worker is ready, False when one died first, None when a signal
        came first."""
        spec = WorkerSpec(0, self.count, self.run_dir, self.secret)
        while True:
            self._pass_on_signals()
            if self.stopping:
                return None
            for i, proc in self.procs.items():
                if proc.poll() is not None:
                    log.error("worker %d exited during startup (status %s); stopping",
                              i, proc.returncode)
                    return False
            if all(spec.ready_path(i).exists() for i in range(self.count)):
                return True
            time.sleep(0.05)

    def _restart_dead(self, port: int) -> None:
        now = time.monotonic()
        for i, proc in self.procs.items():
            if proc.poll() is None:
                continue
            at = self.restart_at[i]
            if at is None:
                # At once, then 0.5 s doubling to 30 s while it keeps dying within a minute of
                # its start.
                quick = now - self.started_at[i] < 60
                n = self.failures[i] = self.failures[i] + 1 if quick else 1
                delay = 0.0 if n == 1 else min(30.0, 0.5 * 2 ** (n - 2))
                log.error("worker %d (pid %d) died with status %s; restarting in %.1f s",
                          i, proc.pid, proc.returncode, delay)
                at = self.restart_at[i] = now + delay
            if now >= at:
                self.restart_at[i] = None
                self._spawn(i, port)

    def _stop(self) -> int:
        """Wait for the signalled workers (their drain grace, then in-flight requests), passing
        on further signals (a second Ctrl-C); 1 if one had to be killed."""
        deadline = time.monotonic() + self.config.drain_grace + GRACEFUL_SHUTDOWN_S + 15
        status = 0
        for i, proc in self.procs.items():
            while proc.poll() is None and time.monotonic() < deadline:
                self._pass_on_signals()
                time.sleep(0.05)
            if proc.poll() is None:
                log.error("worker %d did not stop in time; killing it", i)
                proc.kill()
                proc.wait(5)
                status = 1
        log.info("all workers stopped")
        return status


def supervise(config: ServerConfig) -> int:
    """Run `config.worker_count()` workers on one port until SIGTERM/SIGINT; the exit status."""
    return Supervisor(config).run()
