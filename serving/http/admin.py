"""Model control (Triton's repository extension): reads behind the admin token when one is set,
changes only with the token (or with --admin-open)."""

from __future__ import annotations

import asyncio
import hmac

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving.errors import BadRequest, Forbidden, ServingError, Unauthorized
from serving.http.errors import json_response
from serving.http.siblings import WorkerSpec, ask_worker, forwarded_headers
from serving.lifecycle.manager import ModelManager
from serving.lifecycle.states import State

WRITES_OFF = (
    "model control is off: this server has no admin token. Start it with --admin-token TOKEN "
    "(or SERVING_ADMIN_TOKEN) and send 'Authorization: Bearer TOKEN', or, on a trusted "
    "machine, with --admin-open"
)


class AdminGuard:
    """Who may use the admin routes. With a token: every admin route (reads too) needs
    `Authorization: Bearer <token>`, compared in constant time. Without one: reads are open and
    writes answer 403, unless the operator opened them (`--admin-open`)."""

    def __init__(self, token: str, open_writes: bool = False) -> None:
        self._expected = f"Bearer {token}".encode() if token else b""
        self._open_writes = open_writes

    @property
    def open_writes(self) -> bool:
        """Changes allowed without any credentials (--admin-open, no token)."""
        return self._open_writes and not self._expected

    @property
    def mode(self) -> str:
        """One line for the start-up log (never the token itself)."""
        if self._expected:
            return "admin routes need the admin token"
        if self._open_writes:
            return ("admin routes OPEN without a token (--admin-open): anyone who reaches this "
                    "port may load and unload models and change rollouts")
        return ("model control and rollout changes are off (no admin token; reads stay open): "
                "set --admin-token to enable them")

    def _check_token(self, authorization: str) -> None:
        if not hmac.compare_digest(authorization.encode(), self._expected):
            raise Unauthorized("this endpoint needs 'Authorization: Bearer <admin token>'")

    def read(self, request: Request) -> None:
        """Raise unless `request` may read admin state (index, rollout status and history)."""
        self.may_read(request.headers.get("authorization", ""))

    def write(self, request: Request) -> None:
        """Raise unless `request` may change models or rollouts."""
        self.may_write(request.headers.get("authorization", ""))

    def may_read(self, authorization: str) -> None:
        """`read` for a caller that sent `authorization` (HTTP header or gRPC metadata)."""
        if self._expected:
            self._check_token(authorization)

    def may_write(self, authorization: str) -> None:
        """`write` for a caller that sent `authorization`."""
        if self._expected:
            self._check_token(authorization)
        elif not self._open_writes:
            raise Forbidden(WRITES_OFF)


async def fan_out(worker: WorkerSpec | None, path: str, authorization: str, body: bytes) -> None:
    """Repeat a model-control request on every sibling worker (each has its own models); a
    sibling's failure fails the request, with the sibling's status and reason."""
    if worker is None:
        return
    headers = forwarded_headers({"authorization": authorization})
    results = await asyncio.gather(*(ask_worker(worker, i, "POST", path, headers, body)
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


class ModelControl:
    """Triton's repository extension for every protocol (HTTP routes here, gRPC in
    serving.grpc_api): the guard, the manager, and with worker processes the fan-out."""

    def __init__(
        self, manager: ModelManager, guard: AdminGuard, worker: WorkerSpec | None = None
    ) -> None:
        self.manager = manager
        self.guard = guard
        self.worker = worker

    def index(self, authorization: str, ready_only: bool) -> list[dict[str, str]]:
        self.guard.may_read(authorization)
        entries = self.manager.index()
        if ready_only:
            entries = [e for e in entries if e["state"] == State.READY.value]
        return entries

    async def load(
        self, name: str, authorization: str, internal: bool = False, body: bytes = b""
    ) -> None:
        """Load `name` here and, unless a sibling asked (`internal`), on every sibling."""
        self.guard.may_write(authorization)
        model = await self.manager.load_model(name)
        if model.primary is None:
            failed = [v.reason for v in model.versions.values() if v.state is State.FAILED]
            raise BadRequest(
                f"failed to load model {name!r}: " + (model.reason or "; ".join(failed))
            )
        if not internal:
            await fan_out(self.worker, f"/v2/repository/models/{name}/load", authorization, body)

    async def unload(
        self, name: str, authorization: str, internal: bool = False, body: bytes = b""
    ) -> None:
        self.guard.may_write(authorization)
        await self.manager.unload_model(name)
        if not internal:
            await fan_out(self.worker, f"/v2/repository/models/{name}/unload", authorization,
                          body)


def admin_routes(control: ModelControl) -> list[Route]:
    """POST /v2/repository/index, /v2/repository/models/{m}/load and .../unload. With worker
    processes, load and unload apply to every worker."""
    worker = control.worker

    def caller(request: Request) -> tuple[str, bool]:
        internal = worker is not None and worker.is_internal(request.headers)
        return request.headers.get("authorization", ""), internal

    async def index(request: Request) -> Response:
        authorization, _ = caller(request)
        control.guard.may_read(authorization)
        body = await request.body()
        ready_only = False
        if body.strip():
            from serving.protocol.jsondata import loads

            doc = loads(body)
            if not isinstance(doc, dict):
                raise BadRequest("the index request must be a JSON object")
            ready_only = doc.get("ready") is True
        return json_response(control.index(authorization, ready_only))

    async def load(request: Request) -> Response:
        authorization, internal = caller(request)
        control.guard.may_write(authorization)  # before reading the body
        await control.load(request.path_params["model"], authorization, internal,
                           await request.body())
        return json_response({})

    async def unload(request: Request) -> Response:
        authorization, internal = caller(request)
        control.guard.may_write(authorization)
        await control.unload(request.path_params["model"], authorization, internal,
                             await request.body())
        return json_response({})

    post = ["POST"]
    return [
        Route("/v2/repository/index", index, methods=post),
        Route("/v2/repository/models/{model}/load", load, methods=post),
        Route("/v2/repository/models/{model}/unload", unload, methods=post),
    ]
