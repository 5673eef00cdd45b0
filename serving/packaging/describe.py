"""Describe an ONNX model for its manifest: signature, checksum, library versions."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import numpy as np

from serving.protocol.datatypes import from_onnx
from serving.registry.manifest import Manifest
from serving.types import TensorSpec


def signature_of(onnx_bytes: bytes) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs as ONNX Runtime sees them (symbolic dimensions become -1)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])

    def spec(a: Any) -> TensorSpec:
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (a.shape or ()))
        return TensorSpec(a.name, from_onnx(a.type), shape)

    return tuple(spec(a) for a in sess.get_inputs()), tuple(spec(a) for a in sess.get_outputs())


def framework_versions() -> dict[str, str]:
    versions = {"numpy": np.__version__}
    for module in ("sklearn", "skl2onnx", "onnx", "onnxruntime"):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        versions["scikit-learn" if module == "sklearn" else module] = mod.__version__
    return versions


def make_manifest(
    name: str,
    onnx_bytes: bytes,
    *,
    labels: tuple[str, ...] = (),
    task: str = "",
    parity: dict[str, Any] | None = None,
    samples: dict[str, list[Any]] | None = None,
    source: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
    reference: dict[str, Any] | None = None,
) -> Manifest:
    """A manifest for `onnx_bytes` (its version is set when it is published)."""
    inputs, outputs = signature_of(onnx_bytes)
    return Manifest(
        name=name,
        version=0,
        sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        inputs=inputs,
        outputs=outputs,
        labels=labels,
        task=task,
        framework=framework_versions(),
        parity=parity or {},
        samples=samples or {},
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source=source or {},
        metadata=metadata or {},
        reference=reference or {},
    )


def check_labels(manifest: Manifest, labels: tuple[str, ...]) -> None:
    """ValueError when `labels` cannot name the classes of the model's scores (their count)."""
    scores = [t for t in manifest.outputs if t.name == "probabilities"] or [
        t for t in manifest.outputs if t.datatype.startswith("FP") and len(t.shape) == 2]
    width = scores[0].shape[-1] if scores else -1
    if labels and width > 0 and width != len(labels):
        raise ValueError(f"--labels names {len(labels)} classes but the model scores {width}")
