"""What one worker process knows about its siblings, and how it calls them.

With `serve --workers N` (serving.supervisor) each worker also listens on a private Unix socket in
the supervisor's run directory. Admin load/unload requests fan out to every worker; rollout
requests go to worker 0 (the only one running the rollout controller). The calls are plain
HTTP/1.1 over that socket, made with the standard library's http.client in a thread, so the event
loop never blocks on a sibling.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from serving.errors import Unavailable

INTERNAL_HEADER = "x-serving-worker"


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker knows about its siblings."""

    index: int
    count: int
    run_dir: str
    secret: str  # marks requests between workers (so they are not fanned out again)

    def socket_path(self, index: int) -> str:
        """Worker `index`'s private Unix socket."""
        return os.path.join(self.run_dir, f"worker-{index}.sock")

    def ready_path(self, index: int) -> Path:
        """The file worker `index` writes once it listens."""
        return Path(self.run_dir) / f"worker-{index}.ready"

    @property
    def metrics_dir(self) -> Path:
        """Where the workers' metrics snapshots meet."""
        return Path(self.run_dir) / "metrics"

    @property
    def siblings(self) -> list[int]:
        """The other workers' indexes."""
        return [i for i in range(self.count) if i != self.index]

    def is_internal(self, headers: Mapping[str, str]) -> bool:
        """True for a request another worker sent (it carries the set's secret)."""
        given = headers.get(INTERNAL_HEADER, "")
        return bool(given) and secrets.compare_digest(given, self.secret)


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT, so several processes share the
    port; the caller listens on it (or, the supervisor, only holds it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def unix_socket(path: str) -> socket.socket:
    """A listening Unix socket at `path`, readable by this user only."""
    if os.path.exists(path):
        os.unlink(path)  # a previous incarnation of this worker
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(64)
    return sock


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket (the host name only fills the Host header)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("worker", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def call_worker_sync(
    spec: WorkerSpec, index: int, method: str, path: str, headers: Mapping[str, str],
    body: bytes, timeout: float = 60.0,
) -> tuple[int, bytes]:
    """One request to worker `index` over its Unix socket: (status, body)."""
    conn = UnixHTTPConnection(spec.socket_path(index), timeout)
    try:
        conn.request(method, path, body, {**headers, INTERNAL_HEADER: spec.secret})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


async def call_worker(
    spec: WorkerSpec, index: int, method: str, path: str, headers: Mapping[str, str],
    body: bytes, timeout: float = 60.0,
) -> tuple[int, bytes]:
    """call_worker_sync in a thread: the event loop keeps serving meanwhile."""
    return await asyncio.to_thread(
        call_worker_sync, spec, index, method, path, headers, body, timeout
    )


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers a sibling needs to answer as this worker would."""
    return {name: headers[name] for name in ("authorization", "content-type")
            if headers.get(name)}


async def ask_worker(
    spec: WorkerSpec, index: int, method: str, path: str, headers: Mapping[str, str],
    body: bytes,
) -> tuple[int, bytes]:
    """A request to worker `index`: (status, body); 503 when that worker does not answer (it
    may be restarting)."""
    try:
        return await call_worker(spec, index, method, path, headers, body)
    except (OSError, http.client.HTTPException) as exc:  # TimeoutError is an OSError
        raise Unavailable(f"worker {index} did not answer: {exc!r}") from exc
