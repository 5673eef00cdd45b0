"""Where logged records go, all called from the payload writer thread only: gzip JSON Lines
segments in a directory or under an S3 prefix (a segment is complete or absent: written under
a temporary name and renamed, or uploaded in one PUT), or CloudEvents over HTTP."""

from __future__ import annotations

import http.client
import os
import socket
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from isal import isal_zlib

from serving.payload.block import Block
from serving.payload.lines import block_lines
from serving.payload.record import Logged, event_bodies, iso_time
from serving.registry.layout import write_atomic

SEGMENT_SUFFIX = ".jsonl.gz"
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
_ENDPOINTS = {"primary": "default"}  # KServe's names: default or canary


class Sink(Protocol):
    """What the writer needs of a sink. `add` returns how many records it lost (of the
    blocks' records from their `start`)."""

    def add(self, blocks: list[Block], now: float) -> int: ...

    def flush(self, now: float, force: bool) -> int: ...


class _Segment:
    """One model's open segment: gzip bytes built in memory as records arrive."""

    def __init__(self, now: float) -> None:
        self.opened = now
        self.records = 0
        # wbits 31: a gzip stream. Intel's igzip (python-isal) at level 1 deflates a record
        # in ~0.17 us where zlib's level 1 took ~0.8 (the writer shares the event loop's
        # core), and compresses iris's records 7.0x against zlib's 6.4x.
        self._z = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
        self._parts: list[bytes] = []

    def add(self, lines: bytes, records: int) -> None:
        self._parts.append(self._z.compress(lines))
        self.records += records

    def finish(self) -> bytes:
        self._parts.append(self._z.flush())
        return b"".join(self._parts)


class SegmentSink:
    """Rotated gzip JSON Lines segments, one series per model: `<model>/part-<UTC time>-<pid>-
    <n>.jsonl.gz`. A segment closes at `segment_records` records or `segment_s` seconds;
    `store` writes a finished one (a directory or S3)."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[_Segment, Block]] = {}  # model: segment, first block
        self._seq = 0

    def store(self, name: str, data: bytes) -> None:
        raise NotImplementedError

    def add(self, blocks: list[Block], now: float) -> int:
        lost = 0
        for block in blocks:
            seg = self._open.get(block.model)
            if seg is None:
                seg = self._open[block.model] = (_Segment(now), block)
            seg[0].add(block_lines(block), len(block) - block.start)
            if seg[0].records >= block.policy.segment_records:
                lost += self._close(block.model)
        return lost

    def flush(self, now: float, force: bool) -> int:
        lost = 0
        for model, (seg, first) in list(self._open.items()):
            if force or now - seg.opened >= first.policy.segment_s:
                lost += self._close(model)
        return lost

    def _close(self, model: str) -> int:
        seg, _first = self._open.pop(model)
        self._seq += 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seg.opened))
        name = f"{model}/part-{stamp}-{os.getpid()}-{self._seq:06d}{SEGMENT_SUFFIX}"
        try:
            self.store(name, seg.finish())
        except Exception:
            return seg.records
        return 0


class DirectorySink(SegmentSink):
    """Segments in a local directory."""

    def __init__(self, root: str) -> None:
        super().__init__()
        self.root = Path(root)

    def store(self, name: str, data: bytes) -> None:
        write_atomic(self.root / name, data, fsync=True)  # complete or absent


class S3Sink(SegmentSink):
    """Segments uploaded under an S3 prefix (one PUT each), with the registry's S3 client."""

    def __init__(self, url: str) -> None:
        super().__init__()
        from serving.registry.s3 import S3Registry

        self._s3 = S3Registry(url)

    def store(self, name: str, data: bytes) -> None:
        self._s3.put(self._s3.url.key(*name.split("/")), data)


class CloudEventSink:
    """Each record as two CloudEvents (request, response) in binary content mode, with the
    attributes KServe's payload logger sets, POSTed on one kept-alive connection."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        u = urllib.parse.urlsplit(url)
        self._https = u.scheme == "https"
        self._host, self._port = u.hostname or "localhost", u.port
        self._path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self._timeout = timeout_s
        self._conn: http.client.HTTPConnection | None = None
        self._source = f"http://{socket.gethostname()}/serving"
        self._namespace = os.environ.get("POD_NAMESPACE", "default")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = kind(self._host, self._port, timeout=self._timeout)
        return self._conn

    def events(self, r: Logged) -> Iterator[tuple[dict[str, str], bytes]]:
        """(headers, body) of the request event, then of the response event."""
        rid, t, model, version, route = r[:5]
        request, response = event_bodies(r)
        for kind, body in ((REQUEST_TYPE, request), (RESPONSE_TYPE, response)):
            yield {
                "content-type": "application/json",
                "ce-specversion": "1.0", "ce-id": rid, "ce-source": self._source,
                "ce-type": kind, "ce-time": iso_time(t),
                "ce-inferenceservicename": model, "ce-namespace": self._namespace,
                "ce-component": "predictor", "ce-endpoint": _ENDPOINTS.get(route, route),
                "ce-modelversion": version,
            }, body

    def _post(self, headers: dict[str, str], body: bytes) -> None:
        conn = self._connection()
        try:
            conn.request("POST", self._path, body, headers)
            r = conn.getresponse()
            r.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._conn = None
            raise
        if r.status >= 300:
            raise OSError(f"CloudEvents receiver answered {r.status}")

    def add(self, blocks: list[Block], now: float) -> int:
        """Send each record's two events; once the receiver fails (down, stalled past the
        timeout, or refusing), the rest of the batch is lost at once rather than waiting out
        a timeout per record."""
        records = [r for b in blocks for r in b.records()]
        for n, r in enumerate(records):
            try:
                for headers, body in self.events(r):
                    self._post(headers, body)
            except OSError:
                return len(records) - n
        return 0

    def flush(self, now: float, force: bool) -> int:
        return 0


def open_sink(url: str) -> Sink:
    """The sink a `[logging] sink` / --payload-log value names."""
    if url.startswith(("http://", "https://")):
        return CloudEventSink(url)
    if url.startswith("s3://"):
        return S3Sink(url)
    return DirectorySink(url)


def segment_files(root: str, model: str) -> list[Path]:
    """A directory sink's finished segments of a model, newest first."""
    folder = Path(root) / model
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"part-*{SEGMENT_SUFFIX}"), reverse=True)
