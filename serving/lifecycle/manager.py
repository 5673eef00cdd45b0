"""Load what the registry says should be served, keep each version's state, find versions fast."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from serving.batching.policy import BatchPolicy
from serving.batching.scheduler import Scheduler
from serving.config import ModelConfig, read_model_config
from serving.errors import NotFound, Unavailable
from serving.lifecycle.states import ModelVersion, State
from serving.registry.layout import MANIFEST_FILE, Layout, parse_version
from serving.registry.manifest import read_manifest
from serving.runtime.session import LoadError, load_session

log = logging.getLogger("serving.lifecycle")


@dataclass(eq=False)
class Model:
    """A model name and its versions; `primary` answers unversioned requests."""

    name: str
    config: ModelConfig
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    by_str: dict[str, ModelVersion] = field(default_factory=dict)
    primary: ModelVersion | None = None
    reason: str = ""  # why the model as a whole has nothing to serve (bad config, no versions)

    def refresh_primary(self) -> None:
        """The highest READY version (the routing work may override this later)."""
        ready = [v for v in self.versions.values() if v.state is State.READY]
        self.primary = max(ready, key=lambda v: v.version) if ready else None
        self.by_str = {v.version_str: v for v in self.versions.values()}


class ModelManager:
    """Owns every loaded version. Lookups are dict reads; loading runs in threads."""

    def __init__(self, registry: str, default_intra_op_threads: int = 1) -> None:
        self.layout = Layout(registry)
        self.default_intra_op_threads = default_intra_op_threads
        self.models: dict[str, Model] = {}
        self.loading_done = False

    # ---- lookups on the request path ---------------------------------------------------------

    def get_model(self, name: str) -> Model:
        model = self.models.get(name)
        if model is None:
            raise NotFound(f"unknown model {name[:128]!r}")
        return model

    def get_version(self, name: str, version: str | None) -> ModelVersion:
        """The version a request addresses (unversioned: the primary), READY or an error."""
        model = self.models.get(name)
        if model is None:
            raise NotFound(f"unknown model {name[:128]!r}")
        if version is None or version == "":
            mv = model.primary
            if mv is None:
                raise Unavailable(f"model {name!r} has no ready version{_why(model)}")
            return mv
        mv = model.by_str.get(version)
        if mv is None:
            parse_version(version)  # a malformed version is a 404 with its own message
            raise NotFound(f"model {name!r} has no loaded version {version}")
        if mv.state is not State.READY:
            raise Unavailable(
                f"model {name!r} version {version} is {mv.state.value}"
                + (f": {mv.reason}" if mv.reason else "")
            )
        return mv

    def find_version(self, name: str, version: str | None) -> ModelVersion | None:
        """Like get_version but any state; None when the model has no such version."""
        model = self.get_model(name)
        if version is None or version == "":
            if model.primary is not None:
                return model.primary
            return max(model.versions.values(), key=lambda v: v.version, default=None)
        return model.by_str.get(version)

    def ready(self, strict: bool = True) -> bool:
        """Loading is done and (strict, as Triton) every model that should load is READY."""
        if not self.loading_done:
            return False
        if not strict:
            return True
        for model in self.models.values():
            if model.reason or model.primary is None:
                return False
            if any(v.state is not State.READY for v in model.versions.values()):
                return False
        return True

    # ---- loading -----------------------------------------------------------------------------

    async def load_all(self) -> None:
        """Load every model the registry holds, one version at a time (bounded memory)."""
        for name in self.layout.model_names():
            await self.load_model(name)
        self.loading_done = True

    async def load_model(self, name: str) -> Model:
        try:
            config = read_model_config(self.layout.config_path(name))
            reason = ""
        except ValueError as exc:
            config, reason = ModelConfig(), f"invalid model.toml: {exc}"
        model = self.models.get(name)
        if model is None:
            model = self.models[name] = Model(name, config)
        model.config, model.reason = config, reason
        if reason:
            log.error("model %s: %s", name, reason)
            return model
        wanted = config.versions.select(self.layout.versions(name))
        if not wanted:
            model.reason = "no published versions in the registry"
            log.error("model %s: %s", name, model.reason)
        for version in wanted:
            if version in model.versions and model.versions[version].state is State.READY:
                continue
            mv = ModelVersion(name, version, self.layout.version_dir(name, version), config)
            model.versions[version] = mv
            model.refresh_primary()
            await asyncio.to_thread(self._load_version, mv)
            model.refresh_primary()
        return model

    def _load_version(self, mv: ModelVersion) -> None:
        started = time.monotonic()
        try:
            manifest = read_manifest(mv.path / MANIFEST_FILE)
            if manifest.name != mv.name:
                raise LoadError(f"manifest names model {manifest.name!r}, not {mv.name!r}")
            session = load_session(
                mv.path, manifest, mv.config.runtime, self.default_intra_op_threads
            )
        except (LoadError, ValueError, OSError) as exc:
            mv.state, mv.reason = State.FAILED, str(exc)
            log.error("model %s failed to load: %s", mv.label, exc)
            return
        policy = BatchPolicy.from_config(mv.config.batching, session.signature.batched)
        mv.manifest = manifest
        mv.session = session
        mv.scheduler = Scheduler(session, policy, mv.label)
        mv.load_seconds = time.monotonic() - started
        mv.state = State.READY
        log.info(
            "model %s ready in %.0f ms on %s (max batch %d)",
            mv.label, mv.load_seconds * 1e3, ",".join(session.providers), policy.max_batch_size,
        )

    async def shutdown(self) -> None:
        """Drain every scheduler, then stop their threads."""
        for model in self.models.values():
            for mv in model.versions.values():
                if mv.scheduler is not None:
                    await mv.scheduler.drain()
                    mv.scheduler.close()


def _why(model: Model) -> str:
    if model.reason:
        return f": {model.reason}"
    failed = [v for v in model.versions.values() if v.state is State.FAILED]
    if failed:
        return f": version {failed[-1].version} failed to load: {failed[-1].reason}"
    if any(v.state is State.LOADING for v in model.versions.values()):
        return " yet: loading"
    return ""
