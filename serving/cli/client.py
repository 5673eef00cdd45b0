"""What the commands that talk to a running server share: its URL, the token, one request
(through serving.client, the one HTTP client of the package)."""

from __future__ import annotations

import os
from typing import Any

from serving.client import Client, Refused, Unreachable

DEFAULT_URL = "http://127.0.0.1:8000"


class ServerError(Exception):
    """The server could not be reached or refused the request; str() is the line to print."""


def server_url(flag: str | None, default: str | None = DEFAULT_URL) -> str | None:
    """--url, else $SERVING_URL, else `default`."""
    return flag or os.environ.get("SERVING_URL") or default


def admin_token(flag: str | None) -> str:
    """--token, else $SERVING_ADMIN_TOKEN (empty: none)."""
    return flag or os.environ.get("SERVING_ADMIN_TOKEN", "")


def request_json(
    url: str, path: str, method: str = "GET", body: Any = None, token: str = "",
    timeout_s: float = 60.0,
) -> Any:
    """The JSON document the server answers; ServerError when it refuses or is unreachable."""
    try:
        return Client(url, token, timeout_s).request(method, path, body)
    except Refused as exc:
        message = exc.message
        if exc.status == 401:
            message += (" (the token given is not this server's admin token)" if token else
                        " (pass --token TOKEN or set SERVING_ADMIN_TOKEN)")
        raise ServerError(f"{exc.status}: {message}") from None
    except Unreachable as exc:
        raise ServerError(str(exc)) from None
