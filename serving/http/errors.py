"""The one place where errors become HTTP responses: `{"error": "..."}` with the error's status."""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from serving.errors import ServingError

log = logging.getLogger("serving.http")

JSON = "application/json"


def error_parts(exc: BaseException) -> tuple[int, bytes, dict[str, str]]:
    """Status, JSON body and extra headers for any exception (unknown ones: logged, 500)."""
    if isinstance(exc, ServingError):
        return exc.status, orjson.dumps({"error": str(exc)}), exc.headers
    log.error("unhandled error", exc_info=exc)
    return 500, orjson.dumps({"error": f"internal error: {type(exc).__name__}"}), {}


def json_response(doc: object, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON)


async def serving_error_handler(request: Request, exc: Exception) -> Response:
    status, body, headers = error_parts(exc)
    return Response(body, status_code=status, media_type=JSON, headers=headers)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if exc.status_code == 404:
        detail = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}"
    return Response(
        orjson.dumps({"error": detail}),
        status_code=exc.status_code,
        media_type=JSON,
        headers=exc.headers,
    )
