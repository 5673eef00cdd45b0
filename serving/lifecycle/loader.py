"""One model version's start and end: load it (manifest, session, drift monitor, scheduler),
and drain it within its timeout."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from serving.batching.policy import BatchPolicy
from serving.batching.scheduler import Scheduler
from serving.lifecycle.states import ModelVersion, State
from serving.model_config import RuntimeConfig
from serving.monitoring.drift import DriftMonitor
from serving.registry.layout import MANIFEST_FILE
from serving.registry.manifest import Manifest, read_manifest
from serving.runtime.session import LoadError, Session, load_session

log = logging.getLogger("serving.lifecycle")

# load_session's signature: what a test replaces to load versions without ONNX Runtime
SessionLoader = Callable[[Path, Manifest, RuntimeConfig, int], Session]


def load_version(
    mv: ModelVersion, default_intra_op_threads: int, session_loader: SessionLoader = load_session,
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    """Load `mv` and make it READY, or FAILED with the reason. Blocking: run it in a thread.
    When `stopping()` says the server shut down while the session loaded, it starts nothing."""
    started = time.monotonic()
    try:
        manifest = read_manifest(mv.path / MANIFEST_FILE)
        if manifest.name != mv.name:
            raise LoadError(f"manifest names model {manifest.name!r}, not {mv.name!r}")
        session = session_loader(mv.path, manifest, mv.config.runtime, default_intra_op_threads)
    except (LoadError, ValueError, OSError) as exc:
        mv.state, mv.reason = State.FAILED, str(exc)
        log.error("model %s failed to load: %s", mv.label, exc)
        return
    except Exception as exc:  # a bug or a runtime's own error type: FAILED, never left LOADING
        mv.state, mv.reason = State.FAILED, str(exc) or type(exc).__name__
        log.exception("model %s failed to load", mv.label)
        return
    if stopping():  # the server shut down while this thread loaded: start nothing
        mv.state, mv.reason = State.FAILED, "the server is shutting down"
        log.info("model %s: load abandoned: the server is shutting down", mv.label)
        return
    policy = BatchPolicy.from_config(mv.config.batching, session.signature.batched)
    if not session.signature.batched and mv.config.batching.enabled:
        why = manifest.batching.get("reason") or "its inputs have no variable batch dimension"
        log.warning("model %s: batching is off: %s", mv.label, why)
    mv.manifest = manifest
    mv.session = session
    mv.monitor = _drift_monitor(mv, manifest)
    mv.scheduler = Scheduler(
        session, policy, mv.label, mv.monitor.observe if mv.monitor else None, mv.stats
    )
    mv.load_seconds = time.monotonic() - started
    mv.state = State.READY
    log.info(
        "model %s ready in %.0f ms on %s (max batch %d)",
        mv.label, mv.load_seconds * 1e3, ",".join(session.providers), policy.max_batch_size,
    )


def _drift_monitor(mv: ModelVersion, manifest: Manifest) -> DriftMonitor | None:
    mon = mv.config.monitoring
    if not (manifest.reference and mon.drift):
        return None
    try:
        return DriftMonitor(manifest.reference, manifest.created_at, mon.window_rows,
                            mon.sample, mon.psi_threshold, mon.max_rows_per_batch,
                            mon.min_rows)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("model %s: drift monitoring off: bad reference: %s", mv.label, exc)
        return None


async def drain(mv: ModelVersion) -> None:
    """Let a version's scheduler finish what it holds, for at most the model's
    `[versions] drain_timeout_s`, then close it."""
    sched = mv.scheduler
    if sched is None:
        return
    timeout = mv.config.versions.drain_timeout_s
    try:
        await asyncio.wait_for(sched.drain(), timeout)
    except TimeoutError:
        log.warning("model %s did not drain within %g s ([versions] drain_timeout_s): closing it "
                    "with %d requests queued and %d running", mv.label, timeout, sched.queued,
                    sched.in_flight)
    finally:
        sched.close()
