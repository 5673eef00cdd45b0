"""Model control (Triton's repository extension), behind the admin token when one is set."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving.errors import BadRequest, ServingError, Unauthorized
from serving.http.errors import json_response
from serving.http.workers import WorkerSpec, ask_worker
from serving.lifecycle.manager import ModelManager
from serving.lifecycle.states import State


def make_authorizer(token: str) -> Callable[[Request], None]:
    """A check that raises 401 unless the request carries the admin token (no token: open)."""
    expected = f"Bearer {token}".encode()

    def authorize(request: Request) -> None:
        if not token:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise Unauthorized("this endpoint needs 'Authorization: Bearer <admin token>'")

    return authorize


async def fan_out(worker: WorkerSpec | None, request: Request, body: bytes) -> None:
    """Repeat a model-control request on every sibling worker (each has its own models); a
    sibling's failure fails the request, with the sibling's status and reason."""
    if worker is None or worker.is_internal(request.headers):
        return
    results = await asyncio.gather(*(ask_worker(worker, i, request, body)
                                     for i in worker.siblings))
    for i, (status, payload) in zip(worker.siblings, results, strict=True):
        if status != 200:
            try:
                message = str(orjson.loads(payload)["error"])
            except (ValueError, KeyError, TypeError):
                message = payload.decode(errors="replace")[:500]
            err = ServingError(f"worker {i}: {message}")
            err.status = status
            raise err


def admin_routes(
    manager: ModelManager, token: str, worker: WorkerSpec | None = None
) -> list[Route]:
    """POST /v2/repository/index, /v2/repository/models/{m}/load and .../unload. With worker
    processes, load and unload apply to every worker."""
    authorize = make_authorizer(token)

    async def index(request: Request) -> Response:
        authorize(request)
        entries = manager.index()
        body = await request.body()
        if body.strip():
            from serving.protocol.jsondata import loads

            doc = loads(body)
            if not isinstance(doc, dict):
                raise BadRequest("the index request must be a JSON object")
            if doc.get("ready") is True:
                entries = [e for e in entries if e["state"] == State.READY.value]
        return json_response(entries)

    async def load(request: Request) -> Response:
        authorize(request)
        name = request.path_params["model"]
        body = await request.body()
        model = await manager.load_model(name)
        if model.primary is None:
            failed = [v.reason for v in model.versions.values() if v.state is State.FAILED]
            raise BadRequest(
                f"failed to load model {name!r}: " + (model.reason or "; ".join(failed))
            )
        await fan_out(worker, request, body)
        return json_response({})

    async def unload(request: Request) -> Response:
        authorize(request)
        body = await request.body()
        await manager.unload_model(request.path_params["model"])
        await fan_out(worker, request, body)
        return json_response({})

    post = ["POST"]
    return [
        Route("/v2/repository/index", index, methods=post),
        Route("/v2/repository/models/{model}/load", load, methods=post),
        Route("/v2/repository/models/{model}/unload", unload, methods=post),
    ]
