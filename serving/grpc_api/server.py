"""The gRPC server: grpcio's synchronous server, whose threads hand each call to the event
loop (uvicorn's uvloop), so gRPC and HTTP requests meet in the same batching queues."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc

from serving.grpc_api.service import InferenceService

log = logging.getLogger("serving.grpc")
# grpcio's handler threads: each holds one call while the loop serves it (blocked, GIL free),
# so there are as many as calls in flight can usefully be (they are created on demand)
THREADS = 256


class GrpcServer:
    """The running server, stopped from the loop as the app's lifespan ends."""

    def __init__(self, server: grpc.Server) -> None:
        self.server = server

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let those in flight finish for `grace` seconds, then cancel them
        (waited for off the loop, which is still serving the calls that finish)."""
        await asyncio.to_thread(self.server.stop(grace).wait)


async def start_grpc(
    service: InferenceService, host: str, port: int, max_message_bytes: int, shared: bool
) -> GrpcServer:
    """Listen on (host, port) and serve. `shared`: worker processes share the port
    (SO_REUSEPORT, as their HTTP port); a single server refuses a port another process holds.
    Messages above `max_message_bytes` are refused with RESOURCE_EXHAUSTED (both ways)."""
    server = grpc.server(ThreadPoolExecutor(THREADS, "grpc"), options=[
        ("grpc.so_reuseport", 1 if shared else 0),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ])
    server.add_generic_rpc_handlers([service.handler(asyncio.get_running_loop())])
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot serve gRPC on {address}: {exc}") from exc
    server.start()
    log.info("serving gRPC on %s", address)
    return GrpcServer(server)
