"""Rollout admin routes: /v2/models/{m}/rollout[/{action}], guarded as model control is."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving.errors import Unavailable
from serving.http.admin import AdminGuard
from serving.http.errors import json_response
from serving.http.forward import to_holder
from serving.http.siblings import WorkerSpec, ask_worker, forwarded_headers
from serving.lifecycle.leadership import Leadership
from serving.lifecycle.plan import Plan
from serving.lifecycle.rollout import RolloutController
from serving.protocol.jsondata import loads

Endpoint = Callable[[Request], Awaitable[Response]]


def rollout_routes(
    controller: RolloutController | None, guard: AdminGuard, leader: WorkerSpec | None = None,
    leadership: Leadership | None = None,
) -> list[Route]:
    """The rollout routes; `leader` set: this is a worker process other than worker 0, and every
    rollout request is answered by worker 0, which runs the controller. `leadership` set: while
    another replica holds the controller lease, rollout requests go there."""
    def ctl() -> RolloutController:
        if controller is None:
            raise Unavailable("this replica runs no rollout controller (--no-rollout-controller)")
        return controller

    async def start(request: Request) -> Response:
        guard.write(request)
        plan = Plan.from_json(loads(await request.body() or b"{}"))
        return json_response((await ctl().start(request.path_params["model"], plan)).to_json())

    async def status(request: Request) -> Response:
        guard.read(request)
        return json_response(ctl().status(request.path_params["model"]).to_json())

    async def act(request: Request) -> Response:
        guard.write(request)
        p = request.path_params
        return json_response((await ctl().act(p["model"], p["action"])).to_json())

    async def history(request: Request) -> Response:
        guard.read(request)
        return json_response(ctl().history(request.path_params["model"]).to_json())

    if leader is not None:
        async def forward(request: Request) -> Response:  # worker 0 checks the token
            status, payload = await ask_worker(
                leader, 0, request.method, request.url.path,
                forwarded_headers(request.headers), await request.body(),
            )
            return Response(payload, status, media_type="application/json")

        start = status = act = history = forward

    routes: list[tuple[str, Endpoint, str]] = [
        ("/v2/models/{model}/rollout/history", history, "GET"),
        ("/v2/models/{model}/rollout", start, "POST"),
        ("/v2/models/{model}/rollout", status, "GET"),
        ("/v2/models/{model}/rollout/{action}", act, "POST"),
    ]
    if leadership is not None and leader is None:
        routes = [(path, _held(leadership, route, m == "GET"), m) for path, route, m in routes]
    return [Route(path, route, methods=[m]) for path, route, m in routes]


def _held(leadership: Leadership, route: Endpoint, read: bool) -> Endpoint:
    """`route` while this replica holds the controller lease; else the holder answers (a read,
    when the holder advertises no URL: this replica, from its copy of the routing state)."""
    async def endpoint(request: Request) -> Response:
        lease = leadership.lease
        if leadership.holding or (read and (lease is None or not lease.url)):
            return await route(request)
        return await to_holder(leadership, request, await request.body())
    return endpoint
