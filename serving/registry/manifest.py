"""A version's manifest: signature, checksum, provenance, parity and sample inputs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from serving.types import TensorSpec


@dataclass(frozen=True)
class Manifest:
    """What `manifest.json` beside a `model.onnx` says about it."""

    name: str
    version: int
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...] = ()
    task: str = ""
    framework: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, list[Any]] = field(default_factory=dict)
    created_at: str = ""
    source: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)  # packaging/profile.py
    # packaging/batchdim.py: {"batchable": false, "reason": ...} when the model cannot batch
    batching: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "format": "onnx",
            "sha256": self.sha256,
            "task": self.task,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "labels": list(self.labels),
            "framework": self.framework,
            "parity": self.parity,
            "samples": self.samples,
            "created_at": self.created_at,
            "source": self.source,
            "metadata": self.metadata,
            "reference": self.reference,
            "batching": self.batching,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Manifest:
        return cls(
            name=str(obj["name"]),
            version=int(obj["version"]),
            sha256=str(obj["sha256"]),
            inputs=tuple(TensorSpec.from_json(t) for t in obj["inputs"]),
            outputs=tuple(TensorSpec.from_json(t) for t in obj["outputs"]),
            labels=tuple(str(x) for x in obj.get("labels", ())),
            task=str(obj.get("task", "")),
            framework=dict(obj.get("framework", {})),
            parity=dict(obj.get("parity", {})),
            samples=dict(obj.get("samples", {})),
            created_at=str(obj.get("created_at", "")),
            source=dict(obj.get("source", {})),
            metadata=dict(obj.get("metadata", {})),
            reference=dict(obj.get("reference") or {}),
            batching=dict(obj.get("batching") or {}),
        )


def parse_manifest(data: bytes, name: str = "manifest.json") -> Manifest:
    """Parse a manifest's bytes; ValueError says what is wrong with them."""
    try:
        return Manifest.from_json(orjson.loads(data))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"invalid manifest {name}: {exc}") from None


def manifest_bytes(manifest: Manifest) -> bytes:
    return orjson.dumps(manifest.to_json(), option=orjson.OPT_INDENT_2)


def read_manifest(path: Path) -> Manifest:
    """Parse a manifest file; ValueError says what is wrong with it."""
    return parse_manifest(path.read_bytes(), path.name)


def write_manifest(path: Path, manifest: Manifest) -> None:
    path.write_bytes(manifest_bytes(manifest))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
