"""Rollout requests that reach a replica which does not hold the controller lease: forwarded to
the holder (its advertised URL, with the caller's admin token), or answered 503 with where the
holder is. A forwarded request carries a header, so it is never forwarded twice."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from serving.client import Client
from serving.errors import Unavailable
from serving.http.errors import JSON
from serving.lifecycle.leadership import Leadership

FORWARDED_HEADER = "x-serving-forwarded-by"
HOLDER_HEADER = "x-rollout-controller"


async def to_holder(leadership: Leadership, request: Request, body: bytes) -> Response:
    """The holder's answer to `request`; Unavailable when there is none to reach."""
    lease = leadership.lease
    if lease is None or not lease.live(leadership.clock()):
        raise Unavailable("no replica holds the rollout controller lease right now (one takes "
                          "it within the lease's time): try again")
    where = lease.url or f"the replica {lease.holder} (it advertises no URL)"
    if not lease.url or request.headers.get(FORWARDED_HEADER):
        err = Unavailable(f"the rollout controller runs on {where}: send rollout requests there")
        err.headers = {HOLDER_HEADER: lease.url} if lease.url else {}
        raise err
    headers = {FORWARDED_HEADER: leadership.me}
    headers.update((k, v) for k, v in request.headers.items()
                   if k in ("authorization", "content-type"))
    holder = Client(lease.url, timeout_s=30)
    data = body if request.method == "POST" else None
    try:
        status, payload = await asyncio.to_thread(
            holder.exchange, request.method, request.url.path, data, headers)
    except OSError as exc:
        raise Unavailable(f"the rollout controller on {where} did not answer: {exc}") from None
    return Response(payload, status, media_type=JSON, headers={HOLDER_HEADER: lease.url})
