"""Load what the registry says should be served, keep each version's state, find versions fast."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass, field

from serving.batching.policy import BatchPolicy
from serving.batching.scheduler import Scheduler
from serving.config import ModelConfig, read_model_config
from serving.errors import NotFound, Unavailable
from serving.lifecycle.states import ModelVersion, State
from serving.monitoring.counters import BatchStats
from serving.monitoring.drift import DriftMonitor
from serving.registry.layout import MANIFEST_FILE, Layout, parse_version
from serving.registry.manifest import read_manifest
from serving.registry.routing_state import (
    RoutingState,
    read_routing,
    routing_stat,
    write_routing,
)
from serving.registry.s3 import S3Mirror, S3Registry, S3Url, default_cache_dir, is_s3_url
from serving.routing.table import RoutingTable
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
    unloaded: bool = False  # unloaded on request: not counted against readiness
    fingerprint: tuple[object, ...] = ()
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
        self, registry: str, default_intra_op_threads: int = 1, registry_cache: str = ""
    ) -> None:
        self.registry = str(registry)
        # An S3 registry is synced into a local cache, and loaded from there like a directory.
        self.mirror: S3Mirror | None = None
        if is_s3_url(registry):
            url = S3Url.parse(registry)
            cache = registry_cache or default_cache_dir(url)
            self.mirror = S3Mirror(S3Registry(url), cache)
            self.layout = Layout(self.mirror.root)
        else:
            self.layout = Layout(registry)
        self.default_intra_op_threads = default_intra_op_threads
        self.models: dict[str, Model] = {}
        self.loading_done = False
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
        if not self.loading_done:
            return False
        if not strict:
            return True
        return all(
            model.primary is not None for model in self.models.values() if not model.unloaded
        )

    def index(self) -> list[dict[str, str]]:
        """Triton's repository index: every model and version in the registry, with its state."""
        out: list[dict[str, str]] = []
        refused = self.mirror.refused() if self.mirror is not None else {}
        names = set(self.layout.model_names()) | set(self.models) | {n for n, _ in refused}
        for name in sorted(names):
            model = self.models.get(name)
            published = self.layout.versions(name) if self.layout.model_dir(name).is_dir() else []
            loaded = model.versions if model else {}
            not_synced = {v: why for (n, v), why in refused.items() if n == name}
            for version in sorted(set(published) | set(loaded) | set(not_synced)):
                mv = loaded.get(version)
                if mv is None and version in not_synced:
                    out.append({"name": name, "version": str(version), "state": "FAILED",
                                "reason": f"not synced from {self.registry}: "
                                          f"{not_synced[version]}"})
                    continue
                entry = {"name": name, "version": str(version),
                         "state": mv.state.value if mv else "UNAVAILABLE",
                         "reason": mv.reason if mv else "not loaded (version policy or unloaded)"}
                out.append(entry)
            published = published or list(not_synced)
            if not published and not loaded:
                out.append({"name": name, "version": "", "state": "UNAVAILABLE",
                            "reason": model.reason if model else "no published versions"})
        return out

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
        """Load every model the registry holds, one version at a time (bounded memory). An S3
        registry that cannot be read while the cache is empty is retried (not ready till then)."""
        delay = 0.5
        while not await self.sync() and not self.layout.model_names():
            log.warning("nothing cached from %s yet: retrying in %g s", self.registry, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        for name in self.layout.model_names():
            await self.load_model(name)
        self.loading_done = True
        # Everything allocated so far lives as long as the server: move it out of the
        # collector's way, so full collections under load walk only per-request garbage
        # (they showed up as multi-millisecond p99 stalls).
        gc.collect()
        gc.freeze()

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    def fingerprint(self, name: str) -> tuple[object, ...]:
        """What polling compares: model.toml, the published versions and the routing state."""
        try:
            st = self.layout.config_path(name).stat()
            cfg: tuple[object, ...] = (st.st_mtime_ns, st.st_size)
        except OSError:
            cfg = ()
        return (cfg, tuple(self.layout.versions(name)), routing_stat(self.layout.root, name))

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
        take traffic; versions no longer wanted drain, then go. A version that fails to load
        leaves what was serving in place."""
        async with self._lock(name):
            if not self.layout.model_dir(name).is_dir():
                raise NotFound(f"model {name!r} is not in the registry")
            fingerprint = self.fingerprint(name)
            try:
                config = read_model_config(self.layout.config_path(name))
                reason = ""
            except ValueError as exc:
                config, reason = ModelConfig(), f"invalid model.toml: {exc}"
            model = self.models.get(name)
            if model is None:
                model = self.models[name] = Model(name, config)
            model.fingerprint = fingerprint
            model.unloaded = False
            if reason:
                model.reason = reason
                log.error("model %s: %s (what was serving keeps serving)", name, reason)
                return model
            config_changed = model.config != config
            model.config, model.reason = config, ""
            try:
                model.routing = read_routing(self.layout.root, name)
            except ValueError as exc:
                log.error("model %s: %s (routing unchanged)", name, exc)
            published = list(fingerprint[1])  # the versions the fingerprint just listed
            wanted = config.versions.select(published)
            if model.routing is not None:  # versions the routing needs stay loaded
                pinned = model.routing.versions() & set(published)
                wanted = sorted(set(wanted) | pinned)
            if not wanted:
                model.reason = "no published versions in the registry"
                log.error("model %s: %s", name, model.reason)
            for version in wanted:
                current = model.versions.get(version)
                if current is not None and current.state is State.READY and not config_changed:
                    continue
                mv = ModelVersion(name, version, self.layout.version_dir(name, version), config,
                                  stats=model.batch_stats.setdefault(version, BatchStats()))
                if current is None or current.state is not State.READY:
                    model.versions[version] = mv  # visible as LOADING
                    model.refresh_primary()
                await asyncio.to_thread(self._load_version, mv)
                if mv.state is State.READY or current is None or current.state is not State.READY:
                    model.versions[version] = mv
                    if current is not None and current is not mv and current.scheduler:
                        task = asyncio.create_task(self._retire(current))  # a config reload
                        self._background.add(task)
                        task.add_done_callback(self._background.discard)
                else:
                    log.error("model %s: reload failed, version %d keeps serving", name, version)
                model.refresh_primary()
            model.refresh_primary()  # the routing read above may move the primary
            if not config.auto_promote and model.routing is None and model.primary is not None:
                # Pin what serves now: from here on only a rollout moves the primary.
                model.routing = RoutingState(primary=model.primary.version)
                try:
                    await self._write_routing(name, model.routing)
                except Exception as exc:  # the pin holds here; the next load writes it again
                    log.error("model %s: could not save the pinned primary: %s", name, exc)
                else:  # our own write: not a change for the next poll to reload for
                    model.fingerprint = (*fingerprint[:2], routing_stat(self.layout.root, name))
                model.refresh_primary()
            # Retire versions the policy no longer wants, once something wanted serves.
            if any(v in model.versions and model.versions[v].state is State.READY for v in wanted):
                for version in [v for v in model.versions if v not in wanted]:
                    mv = model.versions[version]
                    if mv.state is State.READY:
                        await self._retire(mv, model)
                    elif mv.state is State.FAILED:
                        del model.versions[version]
            model.refresh_primary()
            return model

    async def unload_model(self, name: str) -> None:
        """Stop serving a model: its versions stop taking requests and drain, then go."""
        model = self.get_model(name)
        async with self._lock(name):
            for mv in list(model.versions.values()):
                await self._retire(mv, model)
            model.unloaded = True
            model.reason = "unloaded"
            model.refresh_primary()

    async def _retire(self, mv: ModelVersion, model: Model | None = None) -> None:
        """DRAINING (no new requests; in-flight ones finish), then UNLOADED and released."""
        mv.state = State.DRAINING
        if model is not None:
            model.refresh_primary()
        if mv.scheduler is not None:
            await mv.scheduler.drain()
            mv.scheduler.close()
        mv.state = State.UNLOADED
        mv.scheduler, mv.session = None, None
        if model is not None and model.versions.get(mv.version) is mv:
            del model.versions[mv.version]
            model.refresh_primary()
        log.info("model %s unloaded", mv.label)

    async def poll(self, interval_s: float) -> None:
        """Watch the registry: load new models and versions, apply changed configs, and unload
        models and versions that were removed."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sync()
                names = set(self.layout.model_names())
                for name in sorted(names):
                    model = self.models.get(name)
                    if model is None or model.fingerprint != self.fingerprint(name):
                        log.info("registry changed for model %s: reloading", name)
                        await self.load_model(name)
                for name in [n for n in self.models if n not in names]:
                    if not self.models[name].unloaded:
                        log.info("model %s left the registry: unloading", name)
                        await self.unload_model(name)
            except Exception:  # polling must outlive a bad registry state
                log.exception("registry poll failed")

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
        if self.stopping:  # the server shut down while this thread loaded: start nothing
            mv.state, mv.reason = State.FAILED, "the server is shutting down"
            log.info("model %s: load abandoned: the server is shutting down", mv.label)
            return
        policy = BatchPolicy.from_config(mv.config.batching, session.signature.batched)
        mv.manifest = manifest
        mv.session = session
        mon = mv.config.monitoring
        if manifest.reference and mon.drift:
            try:
                mv.monitor = DriftMonitor(manifest.reference, manifest.created_at,
                                          mon.window_rows, mon.sample, mon.psi_threshold,
                                          mon.max_rows_per_batch)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("model %s: drift monitoring off: bad reference: %s", mv.label, exc)
        mv.scheduler = Scheduler(
            session, policy, mv.label, mv.monitor.observe if mv.monitor else None, mv.stats
        )
        mv.load_seconds = time.monotonic() - started
        mv.state = State.READY
        log.info(
            "model %s ready in %.0f ms on %s (max batch %d)",
            mv.label, mv.load_seconds * 1e3, ",".join(session.providers), policy.max_batch_size,
        )

    async def shutdown(self) -> None:
        """Drain every scheduler, then stop their threads."""
        self.stopping = True
        for model in list(self.models.values()):
            for mv in list(model.versions.values()):
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
