"""The package's one HTTP client, for a running server's JSON routes: what `serving models`,
`serving rollout` and the demos use to talk to it. Standard library only (urllib), so the commands
need nothing the server lacks."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import orjson


class Refused(Exception):
    """The server answered with an error status; `message` is its `{"error": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Unreachable(Exception):
    """No answer: connection refused, name not found, timed out."""


@dataclass(frozen=True)
class Client:
    """JSON over HTTP to one server; `token` is sent as `Authorization: Bearer`."""

    url: str
    token: str = ""
    timeout_s: float = 60.0

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, {} if body is None else body)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded JSON answer; Refused for an error status, Unreachable for none."""
        data = None if body is None else orjson.dumps(body)
        req = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                payload = r.read()
        except urllib.error.HTTPError as exc:
            with exc:
                raise Refused(exc.code, _error_message(exc.read(), str(exc.reason))) from None
        except OSError as exc:  # URLError is an OSError
            raise Unreachable(f"cannot reach {self.url}: {exc}") from None
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise Unreachable(f"{self.url}{path} did not answer JSON") from None


def _error_message(payload: bytes, fallback: str) -> str:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return fallback
    return str(doc["error"]) if isinstance(doc, dict) and "error" in doc else fallback
