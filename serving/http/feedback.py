"""`POST /v2/models/{model}/feedback`: true labels or values for logged requests, by id.

Feedback steers rollouts (`max_accuracy_drop`), so it is guarded as a write: with an admin
token it needs `Authorization: Bearer <token>`; without one it answers 403 unless the server
was started with --admin-open (the trusted service that knows the truth holds the token)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving.http.admin import AdminGuard
from serving.http.errors import json_response
from serving.payload.desk import FeedbackDesk


def feedback_routes(desk: FeedbackDesk, guard: AdminGuard) -> list[Route]:
    async def feedback(request: Request) -> Response:
        guard.write(request)
        return json_response(await desk.receive(request.path_params["model"],
                                                await request.body()))

    return [Route("/v2/models/{model}/feedback", feedback, methods=["POST"])]
