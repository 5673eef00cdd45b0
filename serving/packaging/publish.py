"""Publish a version atomically: write a temp dir in the model dir, then rename it into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from serving.registry.layout import (
    CONFIG_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    Layout,
    is_version,
    write_atomic,
)
from serving.registry.manifest import Manifest, write_manifest
from serving.registry.s3 import is_s3_url

_MAX_TRIES = 1000  # racing publishers each take the next free number; this bounds the loop


def publish_version(
    registry: Path | str,
    manifest: Manifest,
    onnx_bytes: bytes,
    model_toml: str | None = None,
) -> int:
    """Write `onnx_bytes` + manifest as the model's next integer version; return that version.

    The version directory appears whole or not at all: a crash leaves only a `.tmp-*` directory,
    which the registry ignores (its name is not an integer). `s3://bucket/prefix` publishes to
    object storage: model.onnx first, manifest.json last, never over an existing version.
    """
    if is_s3_url(registry):
        from serving.registry.s3 import S3Registry

        return S3Registry(str(registry)).publish_version(manifest, onnx_bytes, model_toml)
    layout = Layout(registry)
    model_dir = layout.model_dir(manifest.name)
    model_dir.mkdir(parents=True, exist_ok=True)
    if model_toml is not None and not (model_dir / CONFIG_FILE).exists():
        write_atomic(model_dir / CONFIG_FILE, model_toml.encode())
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=model_dir))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; servers under another user must read it
    try:
        (tmp / MODEL_FILE).write_bytes(onnx_bytes)
        # After every numbered directory, complete or not: a number whose directory lacks its
        # manifest (a half-copied version, a stray folder) is taken too, never published over.
        version = max(_numbered(model_dir), default=0)
        for _ in range(_MAX_TRIES):
            version += 1
            write_manifest(tmp / MANIFEST_FILE, replace(manifest, version=version))
            _fsync_dir(tmp)
            try:
                os.rename(tmp, model_dir / str(version))  # atomic; fails if the target exists
            except OSError:
                if (model_dir / str(version)).exists():
                    continue  # another publisher took this number: take the next one
                raise
            _fsync_dir(model_dir)
            return version
        raise RuntimeError(f"could not claim a version number for {manifest.name} in {registry}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _numbered(model_dir: Path) -> list[int]:
    """Every entry named like a version, whether or not it holds a manifest."""
    return [int(p.name) for p in model_dir.iterdir() if is_version(p.name)]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
