"""The rollout controller's lease: which replica drives rollouts, kept in the registry.

`<registry>/_state/_controller.lease` holds the holder's id, the URL it answers rollout requests
on, and when the lease expires. The holder renews it well before then; another replica takes it
only once it has expired, so when the holder dies the lease moves within its time to live. Every
change is a compare-and-swap: in a directory, under an exclusive lock on a lock file beside it
(read, compare, write to a temporary file and rename); in S3, a conditional write (If-None-Match
for a new lease, If-Match on the ETag read for a renewal or a takeover).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import orjson

from serving.registry.layout import write_atomic
from serving.registry.routing_state import STATE_DIR

LEASE_NAME = "_controller.lease"


@dataclass(frozen=True)
class Lease:
    """Who drives rollouts until when (unix seconds)."""

    holder: str  # a unique id per process
    url: str  # where it answers rollout requests ("": not advertised)
    expires_at: float
    acquired_at: float

    def live(self, now: float) -> bool:
        return now < self.expires_at

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> Lease | None:
        """The lease, or None for an unreadable one (which anyone may replace)."""
        try:
            doc = orjson.loads(data)
            return cls(str(doc["holder"]), str(doc["url"]), float(doc["expires_at"]),
                       float(doc["acquired_at"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def claim(current: Lease | None, holder: str, url: str, now: float,
          ttl_s: float) -> Lease | None:
    """The lease `holder` may write now: a renewal of its own, a new one when there is none
    or it has expired; None while another holder's lease lives."""
    if current is not None and current.holder == holder:
        return replace(current, url=url, expires_at=now + ttl_s)
    if current is None or not current.live(now):
        return Lease(holder, url, now + ttl_s, now)
    return None


class LeaseStore(Protocol):
    def read(self) -> tuple[Lease | None, str]:
        """The lease and a token for `swap` ("" when there is none)."""
        ...

    def swap(self, lease: Lease, token: str) -> bool:
        """Write `lease` if the stored one is still the one `token` names; False if not."""
        ...


class FileLeaseStore:
    """The lease as a file in a registry directory."""

    def __init__(self, registry: Path | str) -> None:
        self.path = Path(registry) / STATE_DIR / LEASE_NAME

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> tuple[Lease | None, str]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None, ""
        return Lease.from_bytes(data), data.decode(errors="replace")

    def read(self) -> tuple[Lease | None, str]:
        return self._read()

    def swap(self, lease: Lease, token: str) -> bool:
        with self._locked():
            if self._read()[1] != token:
                return False
            write_atomic(self.path, lease.to_bytes())
            return True


class S3LeaseStore:
    """The lease as an object beside the routing states in an S3 registry."""

    def __init__(self, registry: Any) -> None:  # serving.registry.s3.S3Registry
        self.registry = registry
        self.key = registry.url.key(STATE_DIR, LEASE_NAME)

    def read(self) -> tuple[Lease | None, str]:
        if not self.registry.exists(self.key):
            return None, ""
        data, etag = self.registry.get_bytes(self.key)
        return Lease.from_bytes(data), etag

    def swap(self, lease: Lease, token: str) -> bool:
        if not token:
            return bool(self.registry.put_if_absent(self.key, lease.to_bytes()))
        return bool(self.registry.put_if_match(self.key, lease.to_bytes(), token))


def open_lease_store(registry: str) -> LeaseStore:
    """The lease store of a registry directory or s3:// URL."""
    from serving.registry.s3 import S3Registry, is_s3_url

    if is_s3_url(registry):
        return S3LeaseStore(S3Registry(registry))
    return FileLeaseStore(registry)
