"""Triton's model configuration extension: a loaded version described as Triton's
`model_config` document (`GET /v2/models/{m}/config`, gRPC ModelConfig), enough for
perf_analyzer and tritonclient to size their requests."""

from __future__ import annotations

from typing import Any

from serving.lifecycle.states import ModelVersion
from serving.model_config import ModelConfig, VersionPolicy

_TRITON_TYPES = {"BYTES": "TYPE_STRING"}


def _triton_type(datatype: str) -> str:
    return _TRITON_TYPES.get(datatype, f"TYPE_{datatype}")


def triton_config(model: str, cfg: ModelConfig, mv: ModelVersion) -> dict[str, Any]:
    """The document for version `mv` (loaded: it has a manifest and a session) of `model`."""
    assert mv.manifest is not None and mv.session is not None
    policy = mv.scheduler.policy if mv.scheduler else None
    batched = mv.session.signature.batched
    max_batch = policy.max_batch_size if (policy and batched) else 0

    def dims(shape: tuple[int, ...]) -> list[int]:
        return list(shape[1:] if max_batch else shape)

    doc: dict[str, Any] = {
        "name": model,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "max_batch_size": max_batch,
        "input": [
            {"name": t.name, "data_type": _triton_type(t.datatype), "dims": dims(t.shape)}
            for t in mv.manifest.inputs
        ],
        "output": [
            {"name": t.name, "data_type": _triton_type(t.datatype), "dims": dims(t.shape)}
            for t in mv.manifest.outputs
        ],
        "version_policy": _version_policy(cfg.versions),
        "instance_group": [
            {"count": cfg.batching.workers, "kind": _instance_kind(mv.session.providers)}
        ],
    }
    if max_batch and policy is not None:
        doc["dynamic_batching"] = {
            "preferred_batch_size": list(policy.preferred_batch_sizes),
            "max_queue_delay_microseconds": policy.max_queue_delay_us,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": policy.default_timeout_us,
                "max_queue_size": policy.max_queue_size,
            },
        }
    return doc


def _version_policy(policy: VersionPolicy) -> dict[str, Any]:
    if policy.kind == "all":
        return {"all": {}}
    if policy.kind == "specific":
        return {"specific": {"versions": list(policy.versions)}}
    return {"latest": {"num_versions": policy.latest}}


def _instance_kind(providers: tuple[str, ...]) -> str:
    return "KIND_GPU" if providers and providers[0] == "CUDAExecutionProvider" else "KIND_CPU"
