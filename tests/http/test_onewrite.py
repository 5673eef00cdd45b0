"""One transport write per inference response: the cork around uvicorn's real request cycle
(fails loudly if an uvicorn upgrade moves the cycle's transport), with a recording transport."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from serving.http.onewrite import Cork, cork_response

BODY = b'{"outputs":[]}'


class RecordingTransport:
    """What a transport was asked to do, as (call, bytes) pairs."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, chunks: Any) -> None:
        self.calls.append(("writelines", b"".join(chunks)))

    def close(self) -> None:
        self.calls.append(("close", b""))
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def wire(self) -> bytes:
        return b"".join(data for _, data in self.calls)


def _cycle(transport: RecordingTransport, method: str = "POST",
           keep_alive: bool = True) -> RequestResponseCycle:
    scope: Any = {"type": "http", "method": method, "http_version": "1.1", "path": "/",
                  "query_string": b"", "headers": []}
    log = logging.getLogger("test")
    return RequestResponseCycle(
        scope=scope, transport=transport, flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=log, access_logger=log, access_log=False, default_headers=[],
        message_event=asyncio.Event(), expect_100_continue=False, keep_alive=keep_alive,
        on_response=lambda: None,
    )


async def _respond(cycle: RequestResponseCycle, corked: bool, status: int = 200,
                   extra: list[tuple[bytes, bytes]] | None = None) -> Cork | None:
    cork = cork_response(cycle.send) if corked else None
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(BODY)).encode()), *(extra or [])]
    try:
        await cycle.send({"type": "http.response.start", "status": status, "headers": headers})
        await cycle.send({"type": "http.response.body", "body": BODY})
    finally:
        if cork is not None:
            cork.release()
    return cork


def _both(method: str = "POST", keep_alive: bool = True, status: int = 200,
          extra: list[tuple[bytes, bytes]] | None = None
          ) -> tuple[RecordingTransport, RecordingTransport, RequestResponseCycle]:
    plain, corked = RecordingTransport(), RecordingTransport()
    asyncio.run(_respond(_cycle(plain, method, keep_alive), False, status, extra))
    cycle = _cycle(corked, method, keep_alive)
    assert asyncio.run(_respond(cycle, True, status, extra)) is not None, (
        f"uvicorn {uvicorn.__version__} moved RequestResponseCycle.transport: every inference "
        "response now takes two send syscalls; update serving/http/onewrite.py")
    return plain, corked, cycle


def test_uvicorn_writes_head_and_body_separately_without_the_cork() -> None:
    plain, _, _ = _both()
    assert [call for call, _ in plain.calls] == ["write", "write"]  # what the cork is for


def test_a_kept_alive_response_leaves_in_one_write_byte_for_byte() -> None:
    plain, corked, cycle = _both()
    assert [call for call, _ in corked.calls] == ["writelines"]
    assert corked.wire() == plain.wire()
    assert corked.wire().startswith(b"HTTP/1.1 200 OK\r\n") and corked.wire().endswith(BODY)
    assert cycle.transport is corked and cycle.response_complete and not corked.closed


@pytest.mark.parametrize("keep_alive, extra", [
    (False, None),  # an HTTP/1.0 client
    (True, [(b"connection", b"close")]),  # the 503 past the connection cap says close
])
def test_a_closing_response_is_written_whole_before_the_close(
        keep_alive: bool, extra: list[tuple[bytes, bytes]] | None) -> None:
    plain, corked, _ = _both(keep_alive=keep_alive, status=503, extra=extra)
    assert [call for call, _ in corked.calls] == ["writelines", "close"]
    assert corked.wire() == plain.wire() and b"connection: close\r\n" in corked.wire()


def test_a_head_response_writes_its_head_on_release() -> None:
    plain, corked, _ = _both(method="HEAD", status=405)
    assert [call for call, _ in corked.calls] == ["write"]
    assert corked.wire() == plain.wire() and corked.wire().endswith(b"\r\n\r\n")


def test_a_failed_send_still_gives_the_transport_back() -> None:
    transport = RecordingTransport()
    cycle = _cycle(transport)

    async def bad() -> None:
        await _respond(cycle, True, extra=[(b"x-bad", b"a\r\nb")])  # uvicorn refuses it

    with pytest.raises(RuntimeError):
        asyncio.run(bad())
    assert cycle.transport is transport and transport.calls == []


def test_a_client_gone_after_the_start_gets_nothing_written() -> None:
    transport = RecordingTransport()
    cycle = _cycle(transport)

    async def leave_midway() -> None:
        cork = cork_response(cycle.send)
        assert cork is not None
        await cycle.send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", str(len(BODY)).encode())]})
        transport.closed = cycle.disconnected = True  # as uvicorn's connection_lost does
        await cycle.send({"type": "http.response.body", "body": BODY})
        cork.release()

    asyncio.run(leave_midway())
    assert transport.calls == [] and cycle.transport is transport


def test_another_server_gets_the_plain_writes() -> None:
    async def send(message: Any) -> None:  # a plain function: no uvicorn cycle behind it
        pass

    assert cork_response(send) is None
