"""The gRPC server: a listener on the event loop whose connections (`connection.py`) speak
HTTP/2 and run each call's handler on this loop, beside HTTP's, so gRPC and HTTP requests meet
in the same batching queues. No threads."""

from __future__ import annotations

import asyncio
import logging

from serving.grpc_api import frames
from serving.grpc_api.connection import Connection
from serving.grpc_api.service import InferenceService

log = logging.getLogger("serving.grpc")
BACKLOG = 1024
DRAIN_POLL_S = 0.05


class GrpcServer:
    """The running server, stopped from the loop as the app's lifespan ends."""

    def __init__(self, server: asyncio.Server, connections: set[Connection]) -> None:
        self.server = server
        self.connections = connections

    async def stop(self, grace: float) -> None:
        """Take no new connections, refuse new calls (GOAWAY), let those in flight finish for
        `grace` seconds, then cancel them and close."""
        self.server.close()
        for conn in list(self.connections):
            conn.drain()
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        while self.connections and loop.time() < end:
            await asyncio.sleep(DRAIN_POLL_S)
        for conn in list(self.connections):
            conn.fail(frames.NO_ERROR, "the server stopped")


async def start_grpc(
    service: InferenceService, host: str, port: int, max_message_bytes: int, shared: bool
) -> GrpcServer:
    """Listen on (host, port) and serve. `shared`: worker processes share the port
    (SO_REUSEPORT, as their HTTP port); a single server refuses a port another process holds.
    Messages above `max_message_bytes` are refused with RESOURCE_EXHAUSTED (both ways)."""
    methods = service.methods()
    connections: set[Connection] = set()
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        server = await asyncio.get_running_loop().create_server(
            lambda: Connection(methods, max_message_bytes, connections), host, port,
            reuse_port=shared or None, backlog=BACKLOG,
        )
    except OSError as exc:
        raise OSError(f"cannot serve gRPC on {address}: {exc}") from exc
    log.info("serving gRPC on %s", address)
    return GrpcServer(server, connections)
