"""Who may change what: model control and rollout changes are off without a token."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from serving.config import ServerConfig, is_loopback
from serving.errors import Forbidden, Unauthorized
from serving.http.admin import AdminGuard
from tests.conftest import RunningServer, run_server

WRITES = [
    ("/v2/repository/models/iris/unload", None),
    ("/v2/repository/models/iris/load", None),
    ("/v2/models/iris/rollout", {"candidate": 1, "steps": "10"}),
    ("/v2/models/iris/rollout/abort", None),
    ("/v2/models/iris/rollout/promote", None),
]


def _request(authorization: str | None = None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers})


def test_without_a_token_reads_are_open_and_writes_forbidden() -> None:
    guard = AdminGuard("")
    guard.read(_request())
    with pytest.raises(Forbidden, match="--admin-token"):
        guard.write(_request())
    assert "off" in guard.mode and not guard.open_writes


def test_admin_open_allows_writes_without_a_token() -> None:
    guard = AdminGuard("", open_writes=True)
    guard.write(_request())
    assert guard.open_writes and "OPEN" in guard.mode


@pytest.mark.parametrize("header", [None, "Bearer wrong", "s3cret", "Bearer s3cret "])
def test_with_a_token_every_admin_route_needs_it(header: str | None) -> None:
    guard = AdminGuard("s3cret", open_writes=True)  # a token wins over --admin-open
    for check in (guard.read, guard.write):
        with pytest.raises(Unauthorized) as err:
            check(_request(header))
        assert "s3cret" not in str(err.value)
    guard.read(_request("Bearer s3cret"))
    guard.write(_request("Bearer s3cret"))
    assert "s3cret" not in guard.mode and not guard.open_writes


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("example.com", False),
])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_admin_open_is_refused_off_loopback_without_a_token() -> None:
    with pytest.raises(ValueError, match=r"--admin-open without an admin token on 0\.0\.0\.0"):
        ServerConfig(host="0.0.0.0", admin_open=True)
    ServerConfig(host="0.0.0.0", admin_open=True, admin_token="t")
    ServerConfig(host="127.0.0.1", admin_open=True)


@pytest.mark.e2e
def test_serve_refuses_admin_open_on_a_public_host(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "serving", "serve", "--registry", str(tmp_path), "--host",
         "0.0.0.0", "--port", "0", "--admin-open"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--admin-open without an admin token" in done.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(("path", "body"), WRITES)
def test_writes_answer_403_by_default(server: RunningServer, path: str, body: object) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.post(path, json=body)
        assert r.status_code == 403, r.text
        assert "--admin-token" in r.json()["error"] and "--admin-open" in r.json()["error"]
        assert c.post("/v2/repository/index").status_code == 200  # reads stay open
        assert c.get("/v2/models/iris/rollout/history").status_code == 200
        assert c.get("/v2/models/iris/ready").status_code == 200  # nothing was unloaded
    assert "model control and rollout changes are off" in server.log()


@pytest.mark.e2e
def test_admin_open_and_token_modes(registry_copy: Path, tmp_path: Path) -> None:
    with run_server(registry_copy, tmp_path, "--admin-open") as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        assert c.post("/v2/repository/models/iris/unload").status_code == 200
        assert c.post("/v2/repository/models/iris/load").status_code == 200
    assert "admin routes OPEN without a token" in s.log()
    with run_server(registry_copy, tmp_path, env={"SERVING_ADMIN_TOKEN": "t0ps3cret"}) as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        for method, path in [("GET", "/v2/models/iris/rollout"),
                             ("GET", "/v2/models/iris/rollout/history"),
                             ("POST", "/v2/repository/index"),
                             ("POST", "/v2/repository/models/iris/unload")]:
            r = c.request(method, path)
            assert r.status_code == 401 and "t0ps3cret" not in r.text, (path, r.text)
        auth = {"Authorization": "Bearer t0ps3cret"}
        assert c.get("/v2/models/iris/rollout/history", headers=auth).status_code == 200
        assert "t0ps3cret" not in c.get("/metrics").text
    assert "admin routes need the admin token" in s.log() and "t0ps3cret" not in s.log()
