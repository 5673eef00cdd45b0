"""A read-only view of a registry, local or on S3, for `serving models` and `serving examples`."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from serving.registry.layout import MANIFEST_FILE, Layout
from serving.registry.manifest import Manifest, read_manifest
from serving.registry.s3 import S3Registry, is_s3_url


class RegistryView(Protocol):
    """What `serving models` and `serving examples` read."""

    def model_names(self) -> list[str]: ...

    def has_model(self, name: str) -> bool: ...

    def versions(self, name: str) -> list[int]: ...

    def manifest(self, name: str, version: int) -> Manifest: ...


class LocalRegistry:
    def __init__(self, root: Path | str) -> None:
        self.layout = Layout(root)

    def __str__(self) -> str:
        return str(self.layout.root)

    def model_names(self) -> list[str]:
        return self.layout.model_names()

    def has_model(self, name: str) -> bool:
        return self.layout.model_dir(name).is_dir()

    def versions(self, name: str) -> list[int]:
        return self.layout.versions(name)

    def manifest(self, name: str, version: int) -> Manifest:
        return read_manifest(self.layout.version_dir(name, version) / MANIFEST_FILE)


def open_registry(registry: Path | str) -> RegistryView:
    """A registry directory, or `s3://bucket/prefix`."""
    if is_s3_url(registry):
        return S3Registry(str(registry))
    return LocalRegistry(registry)
