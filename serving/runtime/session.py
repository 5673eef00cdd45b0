"""Create, check and warm up one ONNX Runtime session for a model version."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from serving.model_config import RuntimeConfig
from serving.protocol.datatypes import from_onnx, numpy_dtype
from serving.registry.layout import MODEL_FILE
from serving.registry.manifest import Manifest, sha256_file
from serving.signature import Signature
from serving.types import TensorSpec

log = logging.getLogger("serving.runtime")

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class LoadError(Exception):
    """A version could not be loaded; the message is the reason users see."""


def _spec(arg: ort.NodeArg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
    return TensorSpec(arg.name, from_onnx(arg.type), shape)


def choose_providers(requested: tuple[str, ...]) -> list[str]:
    """The requested providers that exist here; by default CUDA first when available, else CPU."""
    available = ort.get_available_providers()
    if requested:
        chosen = [p for p in requested if p in available]
        if not chosen:
            raise LoadError(
                f"none of the requested providers {list(requested)} is available "
                f"(available: {available})"
            )
        return chosen
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _compatible(manifest_spec: TensorSpec, session_spec: TensorSpec) -> bool:
    if manifest_spec.datatype != session_spec.datatype:
        return False
    if len(manifest_spec.shape) != len(session_spec.shape):
        return False
    return all(
        s == -1 or m == s for m, s in zip(manifest_spec.shape, session_spec.shape, strict=True)
    )


RunFn = Callable[[list[str], dict[str, np.ndarray], object], list[np.ndarray]]


def fast_run(session: ort.InferenceSession) -> tuple[RunFn, bool]:
    """ORT's run binding without the public wrapper, and whether the private path is in use.

    The public `InferenceSession.run` re-validates names and ownership in Python on every call
    (~8 us, as much as running iris itself); the signature check has done that work once per
    request already, so batches call the binding `session._sess.run(names, feeds, options)`
    directly. This is the only use of that private API: when an onnxruntime release changes it,
    the public method takes over (tests/runtime/test_session.py fails to say so).
    """
    binding = getattr(getattr(session, "_sess", None), "run", None)
    if callable(binding):
        return binding, True
    log.warning("onnxruntime %s has no InferenceSession._sess.run: using the public run "
                "(slower per batch)", ort.__version__)
    return (lambda names, feeds, options: session.run(names, feeds, options)), False


class Session:
    """A loaded, checked, warmed-up ONNX Runtime session. `run` releases the GIL inside ORT."""

    def __init__(
        self, session: ort.InferenceSession, signature: Signature, single_threaded: bool = True
    ) -> None:
        self._session = session
        self.single_threaded = single_threaded  # ORT runs on the calling thread only
        self.signature = signature
        self.providers = tuple(session.get_providers())
        self._output_names = list(signature.output_names)
        self._fast_run, _private = fast_run(session)

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None) -> list[np.ndarray]:
        """The outputs (all, or those named) for already-validated feeds."""
        names = self._output_names if output_names is None else output_names
        try:
            return self._fast_run(names, feeds, None)
        except ort.capi.onnxruntime_pybind11_state.EPFail:
            # Execution-provider failures go through the public method, which can fall back.
            return self._session.run(names, feeds)  # type: ignore[no-any-return]


def load_session(
    version_dir: Path,
    manifest: Manifest,
    runtime: RuntimeConfig,
    default_intra_op_threads: int = 1,
) -> Session:
    """Verify the checksum, create the session, check its signature and warm it up."""
    path = version_dir / MODEL_FILE
    if not path.is_file():
        raise LoadError(f"{MODEL_FILE} is missing")
    digest = sha256_file(path)
    if digest != manifest.sha256:
        raise LoadError(
            f"checksum mismatch: manifest says sha256 {manifest.sha256[:16]}..., "
            f"file has {digest[:16]}..."
        )
    options = ort.SessionOptions()
    intra = runtime.intra_op_threads
    options.intra_op_num_threads = default_intra_op_threads if intra is None else intra
    options.inter_op_num_threads = runtime.inter_op_threads
    options.graph_optimization_level = _OPT_LEVELS[runtime.graph_optimization_level]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    providers = choose_providers(runtime.providers)
    try:
        session = ort.InferenceSession(path.read_bytes(), options, providers=providers)
    except Exception as exc:  # ORT raises its own exception types for a bad graph
        raise LoadError(f"ONNX Runtime cannot load the model: {exc}") from None

    try:
        got_in = [_spec(a) for a in session.get_inputs()]
        got_out = [_spec(a) for a in session.get_outputs()]
    except ValueError as exc:
        raise LoadError(str(exc)) from None
    _check_signature("input", manifest.inputs, got_in)
    _check_signature("output", manifest.outputs, got_out)
    signature = Signature(manifest.inputs, manifest.outputs)
    single = options.intra_op_num_threads == 1 and providers == ["CPUExecutionProvider"]
    loaded = Session(session, signature, single)
    warm_up(loaded, manifest)
    return loaded


def _check_signature(
    kind: str, declared: tuple[TensorSpec, ...], actual: list[TensorSpec]
) -> None:
    by_name = {t.name: t for t in actual}
    if {t.name for t in declared} != set(by_name):
        raise LoadError(
            f"signature mismatch: manifest {kind}s {[t.name for t in declared]}, "
            f"model has {list(by_name)}"
        )
    for spec in declared:
        if not _compatible(spec, by_name[spec.name]):
            raise LoadError(
                f"signature mismatch for {kind} {spec.name!r}: manifest "
                f"{spec.datatype}{list(spec.shape)}, model {by_name[spec.name].datatype}"
                f"{list(by_name[spec.name].shape)}"
            )


def warm_up(session: Session, manifest: Manifest) -> None:
    """Run the manifest's sample inputs once (first runs allocate; users should not pay that)."""
    if not manifest.samples:
        return
    feeds = {}
    for spec in manifest.inputs:
        if spec.name not in manifest.samples:
            return
        arr = np.asarray(manifest.samples[spec.name], dtype=numpy_dtype(spec.datatype))
        feeds[spec.name] = arr
    try:
        session.run(feeds, None)
    except Exception as exc:
        raise LoadError(f"warm-up with the manifest's sample inputs failed: {exc}") from None
