"""Where routing state is kept, and a read-only view of a registry, local or on S3.

The manager reads and writes routing state through a `RoutingStore`: for a registry directory
that is `<registry>/_state/<model>.json`; for an S3 registry the same key under the bucket prefix,
written to the bucket (so every replica agrees) and read from the synced cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from serving.registry.layout import MANIFEST_FILE, Layout
from serving.registry.manifest import Manifest, read_manifest
from serving.registry.routing_state import (
    RoutingState,
    read_routing,
    routing_stat,
    write_routing,
)
from serving.registry.s3 import S3Registry, is_s3_url

if TYPE_CHECKING:
    from serving.registry.s3 import S3Mirror


class RoutingStore(Protocol):
    """Routing state per model. Calls may block on the network: run them in threads."""

    def read(self, model: str) -> RoutingState | None:
        """The model's state, None when it has none; ValueError when it is corrupt."""
        ...

    def write(self, model: str, state: RoutingState) -> None: ...

    def stat(self, model: str) -> tuple[int, int]:
        """What polling compares to notice a change."""
        ...


class LocalRoutingStore:
    """`<root>/_state/<model>.json`, written atomically."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def read(self, model: str) -> RoutingState | None:
        return read_routing(self.root, model)

    def write(self, model: str, state: RoutingState) -> None:
        write_routing(self.root, model, state)

    def stat(self, model: str) -> tuple[int, int]:
        return routing_stat(self.root, model)


class S3RoutingStore(LocalRoutingStore):
    """Reads the synced cache; writes go to the bucket first, then to the cache."""

    def __init__(self, mirror: S3Mirror) -> None:
        super().__init__(mirror.root)
        self.mirror = mirror

    def write(self, model: str, state: RoutingState) -> None:
        self.mirror.write_state(model, state)


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
