"""Run the app under uvicorn (uvloop + httptools).

SIGTERM: readiness turns false at once, the server keeps serving for `drain_grace` seconds (load
balancers take a moment to stop sending), then stops accepting, finishes in-flight requests and
exits 0. SIGINT (Ctrl-C) skips the grace period. With `--workers N` a supervisor
(serving.supervisor) runs N of these.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import uvicorn

from serving.config import ServerConfig
from serving.http.accept import EagerAccept
from serving.http.app import ServingApp, create_app
from serving.http.connections import connection_protocol
from serving.http.siblings import WorkerSpec, reuseport_socket, unix_socket

log = logging.getLogger("serving")
GRACEFUL_SHUTDOWN_S = 30  # after the drain grace: how long in-flight requests may take


class _Server(uvicorn.Server):
    """uvicorn's server with a drain grace period, telling scripts the bound port once it
    listens (port 0 picks one)."""

    def __init__(
        self, config: uvicorn.Config, app: ServingApp, ready_file: str, grace_s: float
    ) -> None:
        super().__init__(config)
        self._app = app
        self._ready_file = ready_file
        self._grace_s = grace_s
        self._drain_at: float | None = None
        self._drain_logged = False
        self._eager: EagerAccept | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises SIGTERM after its graceful shutdown, so the process dies of the
        # signal (status -15). A drained server has done its job: exit 0, as orchestrators expect.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: set flags only; on_tick (on the loop, every 0.1 s) acts on them.
        self._app.readiness.draining = True
        if sig == signal.SIGTERM and self._grace_s > 0 and self._drain_at is None:
            self._drain_at = time.monotonic() + self._grace_s
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_at is not None:
            if not self._drain_logged:
                self._drain_logged = True
                log.info("SIGTERM: not ready; serving %.1f s more, then draining in-flight "
                         "requests", self._grace_s)
            if time.monotonic() >= self._drain_at:
                self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._eager is not None:
            self._eager.close()
        await super().shutdown(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.servers:
            config = self.config
            self._eager = EagerAccept(
                asyncio.get_running_loop(),
                [s for srv in self.servers for s in srv.sockets],
                lambda: config.http_protocol_class(  # type: ignore[call-arg]  # as uvicorn's listener
                    config=config, server_state=self.server_state, app_state=self.lifespan.state
                ),
            )
            tcp = [s for srv in self.servers for s in srv.sockets
                   if s.family in (socket.AF_INET, socket.AF_INET6)]
            host, port = tcp[0].getsockname()[:2]
            log.info("serving on http://%s:%d", host, port)
            guard = self._app.guard
            log.log(logging.WARNING if guard.open_writes else logging.INFO, "%s", guard.mode)
            if self._ready_file:
                tmp = Path(self._ready_file + ".tmp")
                tmp.write_text(f"{host} {port}\n")
                os.replace(tmp, self._ready_file)


def bind_port(host: str, port: int) -> socket.socket:
    """The listening address of a single server, bound here (not by uvicorn) so a port in use
    fails as it does with workers: one clear line and exit status 1."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def run_server(config: ServerConfig, worker: WorkerSpec | None = None) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status."""
    try:
        tcp = (reuseport_socket(config.host, config.port) if worker
               else bind_port(config.host, config.port))
    except OSError as exc:
        log.error("cannot serve on %s:%d: %s", config.host, config.port, exc.strerror or exc)
        return 1
    if config.grpc_port and worker is None:  # the gRPC port too: one clear line, status 1
        try:
            bind_port(config.host, config.grpc_port).close()
        except OSError as exc:
            tcp.close()
            log.error("cannot serve gRPC on %s:%d: %s", config.host, config.grpc_port,
                      exc.strerror or exc)
            return 1
    # An inference thread that finished its batch waits for the GIL while the event loop
    # decodes; Python's default 5 ms switch interval made that wait the p99. 250 us bounds it.
    sys.setswitchinterval(config.switch_interval_us * 1e-6)
    if config.tracing:  # before the app and its schedulers, which read it once
        from serving.tracing.export import configure

        configure()
    try:
        return _serve(config, worker, tcp)
    finally:
        if config.tracing:
            from serving.tracing.export import shutdown

            shutdown()  # export the spans still buffered


def _serve(config: ServerConfig, worker: WorkerSpec | None, tcp: socket.socket) -> int:
    app = create_app(config, worker=worker)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        http=connection_protocol(
            config.header_timeout, config.body_timeout, config.max_connections
        ),
        lifespan="on",
        ws="none",  # no WebSocket routes: uvicorn need not import a websockets implementation
        access_log=False,
        proxy_headers=False,  # nothing here reads client addresses; saves a wrapper per request
        log_level=config.log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
        date_header=False,
    )
    ready_file = str(worker.ready_path(worker.index)) if worker else config.ready_file
    server = _Server(uv_config, app, ready_file, config.drain_grace)
    tcp.listen(uv_config.backlog)
    sockets = [tcp]
    if worker is not None:
        sockets.append(unix_socket(worker.socket_path(worker.index)))
    server.run(sockets=sockets)
    return 0 if server.started else 1
