"""What the commands that talk to a running server share: its URL, the token, one request."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Any

import orjson

DEFAULT_URL = "http://127.0.0.1:8000"


class ServerError(Exception):
    """The server could not be reached or refused the request; str() is the line to print."""


def server_url(flag: str | None, default: str | None = DEFAULT_URL) -> str | None:
    """--url, else $SERVING_URL, else `default`."""
    return flag or os.environ.get("SERVING_URL") or default


def admin_token(flag: str | None) -> str:
    """--token, else $SERVING_ADMIN_TOKEN (empty: none)."""
    return flag or os.environ.get("SERVING_ADMIN_TOKEN", "")


def _refusal(exc: urllib.error.HTTPError, token: str) -> str:
    try:
        message = str(orjson.loads(exc.read())["error"])
    except Exception:  # not our JSON error (a proxy, another server): its status line
        message = str(exc.reason)
    if exc.code == 401:
        message += (" (the token given is not this server's admin token)" if token else
                    " (pass --token TOKEN or set SERVING_ADMIN_TOKEN)")
    return f"{exc.code}: {message}"


def request_json(
    url: str, method: str = "GET", body: bytes | None = None, token: str = "",
    timeout: float = 60.0,
) -> Any:
    """The JSON document the server answers; ServerError when it refuses or is unreachable."""
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        raise ServerError(_refusal(exc, token)) from None
    except OSError as exc:
        raise ServerError(f"cannot reach {url}: {exc}") from None
