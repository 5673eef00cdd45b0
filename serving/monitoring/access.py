"""The access log: one JSON line per inference request on the `serving.access` logger (only
with --access-log), the same for every protocol."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

_access = logging.getLogger("serving.access")


def access_log_line(
    model: str, version: str, route: str, status: int | str, elapsed: float, info: Any,
    proto: str,
) -> None:
    """One JSON line per request (`status`: the HTTP status, or the gRPC code's name)."""
    doc: dict[str, Any] = {
        "ts": time.time(), "protocol": proto, "model": model, "version": version,
        "route": route, "status": status, "latency_ms": round(elapsed * 1e3, 3),
    }
    if info is not None:
        doc.update(
            request_id=info.request_id, batch_size=info.batch_size,
            decode_ms=round(info.decode_s * 1e3, 3), queue_ms=round(info.queue_s * 1e3, 3),
            inference_ms=round(info.run_s * 1e3, 3), encode_ms=round(info.encode_s * 1e3, 3),
        )
    _access.info(orjson.dumps(doc).decode())
