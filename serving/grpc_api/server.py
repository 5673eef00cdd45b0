"""The grpc.aio server: started on the running event loop (uvicorn's uvloop) by the app's
lifespan, so gRPC and HTTP requests meet in the same batching queues."""

from __future__ import annotations

import logging

import grpc

from serving.grpc_api.service import InferenceService

log = logging.getLogger("serving.grpc")


async def start_grpc(
    service: InferenceService, host: str, port: int, max_message_bytes: int, shared: bool
) -> grpc.aio.Server:
    """Listen on (host, port) and serve. `shared`: worker processes share the port
    (SO_REUSEPORT, as their HTTP port); a single server refuses a port another process holds.
    Messages above `max_message_bytes` are refused with RESOURCE_EXHAUSTED (both ways)."""
    server = grpc.aio.server(options=[
        ("grpc.so_reuseport", 1 if shared else 0),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ])
    server.add_generic_rpc_handlers([service.handler()])
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot serve gRPC on {address}: {exc}") from exc
    await server.start()
    log.info("serving gRPC on %s", address)
    return server
