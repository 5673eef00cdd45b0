"""The package's one HTTP client, for a running server's JSON routes: what `serving models`,
`serving rollout`, the demos and a replica forwarding rollout requests to the controller
(http/forward.py) use to talk to it. Standard library only (urllib), so the commands need nothing
the server lacks."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Mapping
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
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            status, payload = self.exchange(method, path, data, headers)
        except OSError as exc:  # URLError is an OSError
            raise Unreachable(f"cannot reach {self.url}: {exc}") from None
        if status >= 400:
            raise Refused(status, _error_message(payload, http.client.responses.get(status, "")))
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise Unreachable(f"{self.url}{path} did not answer JSON") from None

    def exchange(
        self, method: str, path: str, data: bytes | None, headers: Mapping[str, str]
    ) -> tuple[int, bytes]:
        """One request as sent: (status, body), error statuses included; OSError when no
        answer comes."""
        req = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method,
                                     headers=dict(headers))
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()

def _error_message(payload: bytes, fallback: str) -> str:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return fallback
    return str(doc["error"]) if isinstance(doc, dict) and "error" in doc else fallback
