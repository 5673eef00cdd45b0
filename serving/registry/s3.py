"""A registry in S3-compatible object storage (its mirror in a local cache: registry/mirror.py).

The bucket holds, under a prefix, the same tree as a registry directory:

    <prefix>/<model>/model.toml
    <prefix>/<model>/<version>/model.onnx      (and any other files of the version)
    <prefix>/<model>/<version>/manifest.json   written LAST: a version is complete once it exists
    <prefix>/_state/<model>.json               routing and rollout state, shared by every replica

The server never reads the bucket on the request path: `S3Mirror.sync` (registry/mirror.py)
copies complete versions, model.toml files and routing state into a cache directory, and the
manager loads from there with the same code as for a local registry. Every key is parsed into
validated names before a path is built from it; anything else under the prefix is ignored.

boto3 is imported on first use (the `s3` extra); endpoint and credentials come from the standard
AWS environment variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION, AWS_PROFILE ...), as boto3 reads them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from serving.registry.layout import (
    CONFIG_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    check_model_name,
    is_model_name,
    is_version,
)
from serving.registry.manifest import Manifest, manifest_bytes, parse_manifest
from serving.registry.routing_state import STATE_DIR, state_model

log = logging.getLogger("serving.registry")

SCHEME = "s3://"
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")
_CHUNK = 1 << 20


class S3RegistryError(Exception):
    """An S3 registry could not be read or written; the message says what and where."""


def is_s3_url(registry: object) -> bool:
    """True for `s3://bucket[/prefix]` strings (a Path never is one: it folds the `//`)."""
    return isinstance(registry, str) and registry.startswith(SCHEME)


@dataclass(frozen=True)
class S3Url:
    """`s3://bucket/prefix`, split and checked."""

    bucket: str
    prefix: str  # no leading or trailing slash; "" is the bucket's root

    @classmethod
    def parse(cls, url: str) -> S3Url:
        if not is_s3_url(url):
            raise ValueError(f"not an s3:// URL: {url!r}")
        bucket, _, prefix = url[len(SCHEME):].partition("/")
        prefix = prefix.strip("/")
        if _BUCKET.fullmatch(bucket) is None or ".." in bucket:
            raise ValueError(f"invalid bucket name in {url!r}")
        if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
            raise ValueError(f"invalid prefix in {url!r}: empty, '.' or '..' path segments")
        return cls(bucket, prefix)

    def key(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts)) if self.prefix else "/".join(parts)

    @property
    def list_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"


def default_cache_dir(url: S3Url) -> Path:
    """`$XDG_CACHE_HOME/serving/s3/<bucket>/<prefix>` (else `~/.cache/...`), the prefix written
    as one directory name (`/` as `+`, the bucket root as `+`) so that nested prefixes never
    share a cache; a prefix with other characters is named by its hash."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    parts = url.prefix.split("/") if url.prefix else []
    if all(is_model_name(p) for p in parts):
        leaf = "+".join(parts) or "+"
    else:
        leaf = "=" + hashlib.sha256(url.prefix.encode()).hexdigest()[:24]
    return base / "serving" / "s3" / url.bucket / leaf


@dataclass(frozen=True)
class Obj:
    """One listed object: what tells versions of it apart."""

    key: str
    etag: str
    size: int


@dataclass
class ModelObjects:
    config: Obj | None = None
    versions: dict[int, dict[str, Obj]] = field(default_factory=dict)  # file name -> object

    def complete(self) -> dict[int, dict[str, Obj]]:
        """Versions whose manifest.json exists: publishing writes it last."""
        return {v: files for v, files in self.versions.items() if MANIFEST_FILE in files}


@dataclass
class Snapshot:
    """What one listing of the prefix found, names validated; everything else is dropped."""

    models: dict[str, ModelObjects] = field(default_factory=dict)
    states: dict[str, Obj] = field(default_factory=dict)  # model -> its _state/<model>.json


def parse_listing(objects: list[Obj], url: S3Url) -> Snapshot:
    snap = Snapshot()
    start = len(url.list_prefix)
    for obj in objects:
        parts = obj.key[start:].split("/")
        if len(parts) == 2 and parts[0] == STATE_DIR:
            name = state_model(parts[1])
            if name is not None:
                snap.states[name] = obj
            continue
        if not is_model_name(parts[0]):
            continue
        if len(parts) == 2 and parts[1] == CONFIG_FILE:
            snap.models.setdefault(parts[0], ModelObjects()).config = obj
        elif len(parts) == 3 and is_version(parts[1]) and is_model_name(parts[2]):
            model = snap.models.setdefault(parts[0], ModelObjects())
            model.versions.setdefault(int(parts[1]), {})[parts[2]] = obj
    return snap


class S3Registry:
    """Reads and publishes a registry in a bucket. Thread-safe; calls block (run them in
    threads from async code)."""

    def __init__(self, url: str | S3Url, client: Any = None) -> None:
        self.url = url if isinstance(url, S3Url) else S3Url.parse(url)
        self._client = client
        self._client_lock = threading.Lock()
        self._snapshot: Snapshot | None = None  # for the read helpers below

    def __str__(self) -> str:
        return str(self.url)

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = _make_client()
        return self._client

    # ---- raw access --------------------------------------------------------------------------

    def list_objects(self, under: str = "") -> list[Obj]:
        """Every object under the prefix (or under `under` inside it)."""
        out = []
        with _errors(f"list {self.url}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.url.bucket, Prefix=self.url.list_prefix + under
            )
            for page in pages:
                for o in page.get("Contents", ()):
                    out.append(Obj(o["Key"], str(o.get("ETag", "")), int(o.get("Size", 0))))
        return out

    def snapshot(self, under: str = "") -> Snapshot:
        return parse_listing(self.list_objects(under), self.url)

    def get_bytes(self, key: str) -> tuple[bytes, str]:
        """An object's content and ETag."""
        with _errors(f"get s3://{self.url.bucket}/{key}"):
            r = self.client.get_object(Bucket=self.url.bucket, Key=key)
            return r["Body"].read(), str(r.get("ETag", ""))

    def download(self, key: str, dest: Path) -> tuple[int, str]:
        """Stream an object into `dest`; returns (size, sha256 hex)."""
        h = hashlib.sha256()
        size = 0
        with _errors(f"get s3://{self.url.bucket}/{key}"):
            body = self.client.get_object(Bucket=self.url.bucket, Key=key)["Body"]
            with dest.open("wb") as f:
                for chunk in body.iter_chunks(_CHUNK):
                    f.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
        return size, h.hexdigest()

    def put(self, key: str, data: bytes) -> str:
        """Write an object (overwriting); returns its ETag."""
        with _errors(f"put s3://{self.url.bucket}/{key}"):
            r = self.client.put_object(Bucket=self.url.bucket, Key=key, Body=data)
            return str(r.get("ETag", ""))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            with _errors(f"head s3://{self.url.bucket}/{key}", passthrough=ClientError):
                self.client.head_object(Bucket=self.url.bucket, Key=key)
            return True
        except ClientError as exc:
            if _status(exc) == 404 or _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise S3RegistryError(f"head s3://{self.url.bucket}/{key}: {exc}") from None

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create an object only if none exists; False when one does. A conditional put
        (If-None-Match: *), after a check that also covers stores that ignore the condition;
        stores that refuse it (501) get check-then-put, which a racing writer can beat."""
        from botocore.exceptions import ClientError

        if self.exists(key):
            return False
        where = f"put s3://{self.url.bucket}/{key}"
        try:
            with _errors(where, passthrough=ClientError):
                self.client.put_object(Bucket=self.url.bucket, Key=key, Body=data,
                                       IfNoneMatch="*")
            return True
        except ClientError as exc:
            if _status(exc) in (409, 412) or _code(exc) in ("PreconditionFailed",
                                                              "ConditionalRequestConflict"):
                return False
            if _status(exc) == 501 or _code(exc) == "NotImplemented":
                log.warning("%s does not support conditional writes: check-then-put", self.url)
                self.put(key, data)
                return True
            raise S3RegistryError(f"{where}: {exc}") from None

    def put_if_match(self, key: str, data: bytes, etag: str) -> bool:
        """Replace an object only if its ETag is still `etag` (If-Match); False when another
        writer changed it first."""
        from botocore.exceptions import ClientError

        where = f"put s3://{self.url.bucket}/{key}"
        try:
            with _errors(where, passthrough=ClientError):
                self.client.put_object(Bucket=self.url.bucket, Key=key, Body=data, IfMatch=etag)
            return True
        except ClientError as exc:
            if _status(exc) in (404, 409, 412) or _code(exc) in (
                    "PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
                return False
            raise S3RegistryError(f"{where}: {exc}") from None

    # ---- what `serving models` and `serving examples` read -----------------------------------

    def _snap(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot = self.snapshot()
        return self._snapshot

    def model_names(self) -> list[str]:
        """Models with at least one object under the prefix (as of this object's first read)."""
        return sorted(self._snap().models)

    def has_model(self, name: str) -> bool:
        return check_model_name(name) in self._snap().models

    def versions(self, name: str) -> list[int]:
        """Complete versions (manifest.json present), ascending."""
        model = self._snap().models.get(check_model_name(name))
        return sorted(model.complete()) if model else []

    def manifest(self, name: str, version: int) -> Manifest:
        key = self.url.key(check_model_name(name), str(int(version)), MANIFEST_FILE)
        data, _ = self.get_bytes(key)
        return parse_manifest(data)

    # ---- publishing --------------------------------------------------------------------------

    def publish_version(
        self, manifest: Manifest, onnx_bytes: bytes, model_toml: str | None = None
    ) -> int:
        """Upload `onnx_bytes` + manifest as the model's next version; return that version.

        Readers see the version whole or not at all: model.onnx goes first, manifest.json last.
        The version number is claimed by creating model.onnx with a conditional put, so two
        publishers never share a number; an existing version is never overwritten.
        """
        name = check_model_name(manifest.name)
        self._snapshot = None
        if model_toml is not None:
            self.put_if_absent(self.url.key(name, CONFIG_FILE), model_toml.encode())
        model = self.snapshot(f"{name}/").models.get(name)  # this model's objects only
        version = max(model.versions, default=0) if model else 0  # half-published ones too
        for _ in range(50):
            version += 1
            if not self.put_if_absent(self.url.key(name, str(version), MODEL_FILE), onnx_bytes):
                continue  # another publisher took this number: try the next one
            doc = manifest_bytes(replace(manifest, version=version))
            if not self.put_if_absent(self.url.key(name, str(version), MANIFEST_FILE), doc):
                raise S3RegistryError(
                    f"{name} version {version} got a manifest from another publisher while this "
                    "one uploaded; nothing was overwritten"
                )
            return version
        raise S3RegistryError(f"could not claim a version number for {name} in {self.url}")

    def state_key(self, model: str) -> str:
        return self.url.key(STATE_DIR, f"{check_model_name(model)}.json")


def _make_client() -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise S3RegistryError(
            "s3:// registries need boto3: pip install 'serving[s3]'"
        ) from None
    config = Config(retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=10,
                    read_timeout=60)
    return boto3.session.Session().client("s3", config=config)


@contextlib.contextmanager
def _errors(what: str, passthrough: type[BaseException] | None = None) -> Iterator[None]:
    """boto3's errors as S3RegistryError naming the operation and the object."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        if passthrough is not None and isinstance(exc, passthrough):
            raise
        raise S3RegistryError(f"{what}: {exc}") from None


def _status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
