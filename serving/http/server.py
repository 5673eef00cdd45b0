"""Run the app under uvicorn (uvloop + httptools); SIGTERM drains in-flight requests, exits 0."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from serving.config import ServerConfig
from serving.http.app import create_app

log = logging.getLogger("serving")


class _Server(uvicorn.Server):
    """uvicorn's server, telling scripts the bound port once it listens (port 0 picks one)."""

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

    def __init__(self, config: uvicorn.Config, ready_file: str) -> None:
        super().__init__(config)
        self._ready_file = ready_file

    async def startup(self, sockets: list | None = None) -> None:  # type: ignore[override]
        await super().startup(sockets)
        if self.started and self.servers:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            log.info("serving on http://%s:%d", host, port)
            if self._ready_file:
                tmp = Path(self._ready_file + ".tmp")
                tmp.write_text(f"{host} {port}\n")
                os.replace(tmp, self._ready_file)


def run_server(config: ServerConfig) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status."""
    # An inference thread that finished its batch waits for the GIL while the event loop
    # decodes; Python's default 5 ms switch interval made that wait the p99. 250 us bounds it.
    sys.setswitchinterval(config.switch_interval_us * 1e-6)
    app = create_app(config)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # nothing here reads client addresses; saves a wrapper per request
        log_level=config.log_level,
        timeout_graceful_shutdown=30,
        server_header=False,
        date_header=False,
    )
    server = _Server(uv_config, config.ready_file)
    server.run()
    return 0 if server.started else 1
