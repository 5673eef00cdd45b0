"""Load what the registry says should be served, keep each version's state, find versions fast."""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass, field

from serving.errors import NotFound, Unavailable
from serving.lifecycle.background import spawn
from serving.lifecycle.index import repository_index
from serving.lifecycle.loader import SessionLoader, drain, load_version
from serving.lifecycle.states import ModelVersion, State
from serving.model_config import ModelConfig, read_model_config
from serving.monitoring.counters import BatchStats
from serving.registry.layout import Layout, file_stamp, parse_version
from serving.registry.mirror import open_mirror
from serving.registry.routing_state import RoutingState, read_routing, state_path, write_routing
from serving.routing.table import RoutingTable
from serving.runtime.session import load_session

log = logging.getLogger("serving.lifecycle")
Stamp = tuple[int, int, int]  # file_stamp: (inode, mtime_ns, size)
Fingerprint = tuple[Stamp, tuple[int, ...], Stamp]  # model.toml, versions, routing state


@dataclass(eq=False)
class Model:
    """A model name and its versions; `primary` answers unversioned requests."""

    name: str
    config: ModelConfig
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    by_str: dict[str, ModelVersion] = field(default_factory=dict)
    primary: ModelVersion | None = None
    reason: str = ""  # why the model as a whole has nothing to serve (bad config, no versions)
    unloaded: bool = False  # unloaded on request: not counted against readiness
    failed: bool = False  # loading it raised: `reason` says what (retried on the next load)
    fingerprint: Fingerprint | None = None
    routing: RoutingState | None = None
    table: RoutingTable[ModelVersion] = field(default_factory=RoutingTable)  # who serves now
    # Batch counters per version, for the life of the process (a reload keeps counting)
    batch_stats: dict[int, BatchStats] = field(default_factory=dict)

    def refresh_primary(self) -> None:
        """Resolve who serves (serving.routing.table) from the routing state and READY versions."""
        ready = {v.version: v for v in self.versions.values() if v.state is State.READY}
        self.table = RoutingTable.resolve(self.routing, ready)
        self.primary = self.table.primary
        self.by_str = {v.version_str: v for v in self.versions.values()}


class ModelManager:
    """Owns every loaded version. Lookups are dict reads; loading runs in threads."""

    def __init__(
        self, registry: str, default_intra_op_threads: int = 1, registry_cache: str = "",
        session_loader: SessionLoader = load_session,
    ) -> None:
        self.registry = str(registry)
        # An S3 registry is synced into a local cache, and loaded from there like a directory.
        self.mirror = open_mirror(self.registry, registry_cache)
        self.layout = Layout(self.mirror.root if self.mirror is not None else registry)
        self.default_intra_op_threads = default_intra_op_threads
        self.session_loader = session_loader
        self.models: dict[str, Model] = {}
        self.loading_done = False
        self.load_error = ""  # why the last attempt to load everything failed ("": none did)
        self.stopping = False  # set by shutdown(): loads still in a thread are abandoned
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[None]] = set()

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
        """Loading is done and (strict, as Triton) every model that should serve has a READY
        primary. A failed *newer* version does not un-ready a model that still serves."""
        return not self.not_ready_reason(strict)

    def not_ready_reason(self, strict: bool = True) -> str:
        """Why `ready(strict)` is false ("" when it is true)."""
        if not self.loading_done:
            if self.load_error:
                return f"models are loading (the last attempt failed: {self.load_error})"
            return "models are loading"
        if strict:
            for model in self.models.values():
                if not model.unloaded and model.primary is None:
                    return f"model {model.name} has no ready version{_why(model)}"
        return ""

    def index(self) -> list[dict[str, str]]:
        """Triton's repository index: every model and version in the registry, with its state."""
        refused = self.mirror.refused() if self.mirror is not None else {}
        return repository_index(self.layout, self.models, refused, self.registry)

    # ---- loading and unloading ---------------------------------------------------------------

    async def sync(self) -> bool:
        """An S3 registry: bring the local cache up to date (in a thread: the event loop never
        waits on the network). When the bucket cannot be read, what the cache holds serves.
        False when the sync failed."""
        if self.mirror is None:
            return True
        try:
            await asyncio.to_thread(self.mirror.sync)
        except Exception as exc:
            log.error("registry sync from %s failed: %s (serving what the cache at %s holds)",
                      self.registry, exc, self.mirror.root)
            return False
        return True

    async def load_all(self) -> None:
        """Load every model the registry holds, one version at a time (bounded memory); one that
        fails is marked failed and the others load. An S3 registry that cannot be read while the
        cache is empty is retried; a registry that cannot be listed raises (reason kept)."""
        try:
            delay = 0.5
            while not await self.sync() and not self.layout.model_names():
                log.warning("nothing cached from %s yet: retrying in %g s", self.registry, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            for name in self.layout.model_names():
                await self._load_or_mark(name)
        except Exception as exc:
            self.load_error = str(exc) or type(exc).__name__
            raise
        self.load_error = ""
        self.loading_done = True
        # Everything allocated so far lives as long as the server: move it out of the
        # collector's way, so full collections under load walk only per-request garbage
        # (they showed up as multi-millisecond p99 stalls).
        gc.collect()
        gc.freeze()

    async def _load_or_mark(self, name: str) -> None:
        """load_model, with its failure kept to this model: marked failed, logged, never
        raised (the other models still load)."""
        try:
            await self.load_model(name)
        except NotFound:
            log.warning("model %s left the registry while it was being loaded", name)
        except Exception as exc:
            log.error("model %s could not be loaded: %s", name, exc, exc_info=exc)
            model = self.models.get(name)
            if model is None:
                model = self.models[name] = Model(name, ModelConfig())
            model.failed, model.reason = True, f"could not be loaded: {exc}"
            model.fingerprint = None  # the next poll tries again
            model.refresh_primary()

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def fingerprint(self, name: str) -> Fingerprint:
        """What polling compares: model.toml, the published versions and the routing state
        (files by inode, mtime and size: an atomic replace always changes the inode)."""
        return (
            file_stamp(self.layout.config_path(name)),
            tuple(self.layout.versions(name)),
            file_stamp(state_path(self.layout.root, name)),
        )

    async def set_routing(self, name: str, state: RoutingState) -> Model:
        """Write a model's routing state to the registry and apply it here (loading what it
        needs first)."""
        await self._write_routing(name, state)
        return await self.load_model(name)

    async def _write_routing(self, name: str, state: RoutingState) -> None:
        if self.mirror is None:
            # A small local file, written in place: no await between a caller's change and
            # the reload that applies it (the rollout controller relies on that).
            write_routing(self.layout.root, name, state)
        else:  # the network: never on the event loop
            await asyncio.to_thread(self.mirror.write_state, name, state)

    async def load_model(self, name: str) -> Model:
        """(Re)load a model from the registry: new versions are loaded and warmed up before they
        take traffic; versions no longer wanted drain (in the background), then go. A version
        that fails to load leaves what was serving in place."""
        async with self._lock(name):
            if not self.layout.model_dir(name).is_dir():
                raise NotFound(f"model {name!r} is not in the registry")
            fingerprint = self.fingerprint(name)
            try:
                config, reason = read_model_config(self.layout.config_path(name)), ""
            except ValueError as exc:
                config, reason = ModelConfig(), f"invalid model.toml: {exc}"
            model = self.models.get(name)
            if model is None:
                model = self.models[name] = Model(name, config)
            model.fingerprint = fingerprint
            model.unloaded = model.failed = False
            if reason:
                model.reason = reason
                log.error("model %s: %s (what was serving keeps serving)", name, reason)
                return model
            config_changed = model.config != config
            model.config, model.reason = config, ""
            wanted = self._wanted(model, list(fingerprint[1]))  # the versions just listed
            for version in wanted:
                await self._load_wanted(model, version, config_changed)
            model.refresh_primary()  # the routing read may move the primary
            await self._pin_primary(model, fingerprint)
            self._retire_unwanted(model, wanted)
            model.refresh_primary()
            return model

    def _wanted(self, model: Model, published: list[int]) -> list[int]:
        """Read the routing state; the versions the policy and the routing want loaded."""
        try:
            model.routing = read_routing(self.layout.root, model.name)
        except ValueError as exc:
            log.error("model %s: %s (routing unchanged)", model.name, exc)
        wanted = model.config.versions.select(published)
        if model.routing is not None:  # versions the routing needs stay loaded
            pinned = model.routing.versions() & set(published)
            wanted = sorted(set(wanted) | pinned)
        if not wanted:
            model.reason = "no published versions in the registry"
            log.error("model %s: %s", model.name, model.reason)
        return wanted

    async def _load_wanted(self, model: Model, version: int, config_changed: bool) -> None:
        """Load one wanted version unless it serves with this config already; a reload that
        fails leaves the serving one in place, one that works retires it."""
        current = model.versions.get(version)
        serving = current is not None and current.state is State.READY
        if serving and not config_changed:
            return
        mv = ModelVersion(model.name, version, self.layout.version_dir(model.name, version),
                          model.config, stats=model.batch_stats.setdefault(version, BatchStats()))
        if not serving:
            model.versions[version] = mv  # visible as LOADING
            model.refresh_primary()
        await asyncio.to_thread(load_version, mv, self.default_intra_op_threads,
                                self.session_loader, lambda: self.stopping)
        if mv.state is State.READY or not serving:
            model.versions[version] = mv
            if current is not None and serving:  # a config reload: the old one drains
                self._retire_soon(current)
        else:
            log.error("model %s: reload failed, version %d keeps serving", model.name, version)
        model.refresh_primary()

    async def _pin_primary(self, model: Model, fingerprint: Fingerprint) -> None:
        """Without auto_promote, pin what serves now: from here on only a rollout moves the
        primary."""
        if model.config.auto_promote or model.routing is not None or model.primary is None:
            return
        model.routing = RoutingState(primary=model.primary.version)
        try:
            await self._write_routing(model.name, model.routing)
        except Exception as exc:  # the pin holds here; the next load writes it again
            log.error("model %s: could not save the pinned primary: %s", model.name, exc)
        else:  # our own write: not a change for the next poll to reload for
            model.fingerprint = (fingerprint[0], fingerprint[1],
                                 file_stamp(state_path(self.layout.root, model.name)))
        model.refresh_primary()

    def _retire_unwanted(self, model: Model, wanted: list[int]) -> None:
        """Retire versions the policy no longer wants, once something wanted serves."""
        if not any((mv := model.versions.get(v)) is not None and mv.state is State.READY
                   for v in wanted):
            return
        for version in [v for v in model.versions if v not in wanted]:
            mv = model.versions[version]
            if mv.state is State.READY:
                self._retire_soon(mv, model)
            elif mv.state is State.FAILED:
                del model.versions[version]

    async def unload_model(self, name: str, wait: bool = True) -> None:
        """Stop serving a model: its versions stop taking requests at once and drain, then go
        (`wait`: return once they have, each within its drain timeout)."""
        model = self.get_model(name)
        async with self._lock(name):
            tasks = [self._retire_soon(mv, model) for mv in list(model.versions.values())
                     if mv.state is not State.DRAINING]  # those draining already go by themselves
            model.unloaded = True
            model.reason = "unloaded"
            model.refresh_primary()
        if wait and tasks:
            await asyncio.wait(tasks)

    def _retire_soon(self, mv: ModelVersion, model: Model | None = None) -> asyncio.Task[None]:
        """DRAINING now (no new requests), then, in the background, drained within its
        timeout, UNLOADED and released. Nothing waits on it: a stuck drain holds up no one."""
        mv.state = State.DRAINING
        if model is not None:
            model.refresh_primary()
        return spawn(self._background, self._retire(mv, model), f"retire {mv.label}")

    async def _retire(self, mv: ModelVersion, model: Model | None) -> None:
        await drain(mv)
        mv.state = State.UNLOADED
        mv.scheduler, mv.session = None, None
        if model is not None and model.versions.get(mv.version) is mv:
            del model.versions[mv.version]
            model.refresh_primary()
        log.info("model %s unloaded", mv.label)

    async def poll(self, interval_s: float) -> None:
        """Watch the registry: load new models and versions, apply changed configs, and unload
        models and versions that were removed (once loading at start is done)."""
        while True:
            await asyncio.sleep(interval_s)
            if not self.loading_done:
                continue
            try:
                await self.poll_once()
            except Exception:  # polling must outlive a bad registry state
                log.exception("registry poll failed")

    async def poll_once(self) -> None:
        """One look at the registry (one model's failure is that model's: the others go on)."""
        await self.sync()
        names = set(self.layout.model_names())
        for name in sorted(names):
            model = self.models.get(name)
            if model is None:
                log.info("new model %s in the registry: loading", name)
            elif model.failed:
                log.info("model %s failed to load: trying again", name)
            elif model.fingerprint != self.fingerprint(name):
                log.info("registry changed for model %s: reloading", name)
            else:
                continue
            await self._load_or_mark(name)
        for name in [n for n in self.models if n not in names]:
            if not self.models[name].unloaded:
                log.info("model %s left the registry: unloading", name)
                await self.unload_model(name, wait=False)

    async def shutdown(self) -> None:
        """Drain every version (all at once, each within its drain timeout), then stop their
        threads. Loads still running in a thread start nothing once they finish."""
        self.stopping = True
        serving = [mv for model in self.models.values() for mv in model.versions.values()
                   if mv.scheduler is not None and mv.state is not State.DRAINING]
        await asyncio.gather(*(drain(mv) for mv in serving), *list(self._background),
                             return_exceptions=True)


def _why(model: Model) -> str:
    if model.reason:
        return f": {model.reason}"
    failed = [v for v in model.versions.values() if v.state is State.FAILED]
    if failed:
        return f": version {failed[-1].version} failed to load: {failed[-1].reason}"
    if any(v.state is State.LOADING for v in model.versions.values()):
        return " yet: loading"
    return ""
