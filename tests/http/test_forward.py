"""Rollout requests on a replica that does not hold the controller lease, where there is no
holder to forward to: a 503 that says where the holder is (no server needed)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from starlette.requests import Request

from serving.errors import Unavailable
from serving.http.forward import FORWARDED_HEADER, HOLDER_HEADER, to_holder
from serving.lifecycle.leadership import Leadership
from serving.registry.lease import FileLeaseStore


def _request(headers: dict[str, str] | None = None) -> Request:
    raw = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "path": "/v2/models/iris/rollout/pause",
                    "headers": raw, "query_string": b""})


def _pair(tmp_path: Path, holder_url: str) -> Leadership:
    holder = Leadership(FileLeaseStore(tmp_path), holder_url)
    other = Leadership(FileLeaseStore(tmp_path), "http://127.0.0.1:9")
    assert holder.renew_now() and not other.renew_now()
    return other


def test_no_holder_is_a_503_to_try_again(tmp_path: Path) -> None:
    other = Leadership(FileLeaseStore(tmp_path), "http://127.0.0.1:9")
    with pytest.raises(Unavailable, match="no replica holds"):
        asyncio.run(to_holder(other, _request(), b""))


def test_a_holder_without_a_url_is_named(tmp_path: Path) -> None:
    other = _pair(tmp_path, "")
    assert other.lease is not None
    with pytest.raises(Unavailable, match=re.escape(other.lease.holder)) as info:
        asyncio.run(to_holder(other, _request(), b""))
    assert info.value.headers == {}


def test_a_forwarded_request_is_never_forwarded_again(tmp_path: Path) -> None:
    other = _pair(tmp_path, "http://10.0.0.7:8000")
    with pytest.raises(Unavailable, match=re.escape("http://10.0.0.7:8000")) as info:
        asyncio.run(to_holder(other, _request({FORWARDED_HEADER: "someone"}), b""))
    assert info.value.headers == {HOLDER_HEADER: "http://10.0.0.7:8000"}


def test_an_unreachable_holder_is_a_503(tmp_path: Path) -> None:
    other = _pair(tmp_path, "http://127.0.0.1:9")  # the discard port: nothing listens
    with pytest.raises(Unavailable, match="did not answer"):
        asyncio.run(to_holder(other, _request(), b""))
