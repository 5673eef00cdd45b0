"""The mirror of an S3 registry in a local cache directory, which the server loads from.

`S3Mirror.sync` copies the bucket's complete versions, model.toml files and routing state into the
cache (see registry/s3.py for the bucket's layout); the manager then reads the cache exactly as a
registry directory. Everything lands in `<cache>/.tmp` first and is renamed into place, so readers
never see half a version, and several processes may share one cache.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from serving.registry.layout import (
    CONFIG_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    file_stamp,
    is_model_name,
    is_version,
    write_atomic,
)
from serving.registry.manifest import parse_manifest
from serving.registry.routing_state import (
    STATE_DIR,
    RoutingState,
    routing_bytes,
    state_model,
    state_path,
)
from serving.registry.s3 import (
    ModelObjects,
    Obj,
    S3Registry,
    S3RegistryError,
    S3Url,
    Snapshot,
    default_cache_dir,
    is_s3_url,
)

log = logging.getLogger("serving.registry")

TMP_DIR = ".tmp"  # inside the cache: downloads land here, then are renamed into place
LOCK_FILE = ".lock"
_STALE_TMP_S = 3600.0


def open_mirror(registry: str, cache: str = "") -> S3Mirror | None:
    """The mirror an `s3://` registry is served from (`cache`, else the default cache
    directory); None for a registry directory."""
    if not is_s3_url(registry):
        return None
    url = S3Url.parse(registry)
    return S3Mirror(S3Registry(url), cache or default_cache_dir(url))


@dataclass
class SyncReport:
    """What one sync changed in the cache."""

    added: list[tuple[str, int]] = field(default_factory=list)
    removed: list[tuple[str, int | None]] = field(default_factory=list)  # None: the whole model
    refused: list[tuple[str, int, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # model.toml and state files updated

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.refused or self.files)


class _Refused(Exception):
    """A version failed verification: not installed until its objects change."""


class S3Mirror:
    """Keeps a cache directory equal to the bucket's complete versions, model.toml files and
    routing state. Several processes may share one cache: syncs take a file lock, everything
    lands in `.tmp` first and is renamed into place, and a rename that finds its target already
    there drops its own copy."""

    def __init__(self, registry: S3Registry, cache: Path | str) -> None:
        self.registry = registry
        self.root = Path(cache)
        self._lock = threading.Lock()
        # small files as this process last wrote them: key -> (ETag, file_stamp in the cache)
        self._etags: dict[str, tuple[str, tuple[int, int, int]]] = {}
        self._refused: dict[tuple[str, int], tuple[tuple[object, ...], str]] = {}

    def refused(self) -> dict[tuple[str, int], str]:
        """Versions that failed verification, with the reason (until their objects change)."""
        return {k: reason for k, (_, reason) in self._refused.items()}

    def sync(self) -> SyncReport:
        """Bring the cache up to date with the bucket. Blocking: run it in a thread."""
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            with _file_lock(self.root / LOCK_FILE):
                # Small files written after this instant may be newer than the listing.
                listed_at = time.time() - 1.0
                snap = self.registry.snapshot()
                report = SyncReport()
                self._apply(snap, listed_at, report)
        for model, version in report.added:
            log.info("synced %s v%d from %s", model, version, self.registry)
        for model, gone in report.removed:
            what = model if gone is None else f"{model} v{gone}"
            log.info("removed %s from the cache: no longer in %s", what, self.registry)
        for model, version, reason in report.refused:
            log.error("refused %s v%d from %s: %s", model, version, self.registry, reason)
        return report

    def write_state(self, model: str, state: RoutingState) -> None:
        """Write routing state to the bucket, then to the cache (so this replica reads it back
        at once). Blocking: run it in a thread."""
        key = self.registry.state_key(model)
        data = routing_bytes(state)
        etag = self.registry.put(key, data)
        path = state_path(self.root, model)
        write_atomic(path, data)
        self._etags[key] = (etag, file_stamp(path))

    # ---- the sync itself ---------------------------------------------------------------------

    def _apply(self, snap: Snapshot, listed_at: float, report: SyncReport) -> None:
        tmp = self.root / TMP_DIR
        tmp.mkdir(exist_ok=True)
        _clean_stale(tmp)
        wanted = {name: m for name, m in snap.models.items() if m.complete()}
        for path in sorted(self.root.iterdir()):  # models that left the bucket
            if path.is_dir() and is_model_name(path.name) and path.name not in wanted:
                self._remove(path)
                report.removed.append((path.name, None))
        for name, model in sorted(wanted.items()):
            self._sync_model(name, model, listed_at, report)
        self._refused = {k: v for k, v in self._refused.items()
                         if k[0] in wanted and k[1] in wanted[k[0]].complete()}
        state_dir = self.root / STATE_DIR
        for name, obj in sorted(snap.states.items()):
            self._sync_file(obj, state_dir / f"{name}.json", listed_at, report)
        if state_dir.is_dir():
            for path in state_dir.iterdir():
                owner = state_model(path.name)
                if (owner is not None and owner not in snap.states
                        and _older_than(path, listed_at)):
                    path.unlink(missing_ok=True)
                    report.files.append(f"{STATE_DIR}/{path.name} (removed)")

    def _sync_model(self, name: str, model: ModelObjects, listed_at: float,
                    report: SyncReport) -> None:
        final = self.root / name
        complete = model.complete()
        if not final.is_dir():
            # A new model appears whole: its model.toml and versions, then one rename.
            staging = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root / TMP_DIR))
            try:
                os.chmod(staging, 0o755)
                if model.config is not None:
                    self._sync_file(model.config, staging / CONFIG_FILE, listed_at, report)
                added = [v for v in sorted(complete)
                         if self._install(name, v, complete[v], staging, report)]
                if added and _rename_into_place(staging, final):
                    report.added.extend((name, v) for v in added)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return
        if model.config is not None:
            self._sync_file(model.config, final / CONFIG_FILE, listed_at, report)
        elif (final / CONFIG_FILE).is_file() and _older_than(final / CONFIG_FILE, listed_at):
            (final / CONFIG_FILE).unlink(missing_ok=True)
            report.files.append(f"{name}/{CONFIG_FILE} (removed)")
        for path in sorted(final.iterdir()):  # versions deleted from the bucket
            if path.is_dir() and is_version(path.name) and int(path.name) not in complete:
                self._remove(path)
                report.removed.append((name, int(path.name)))
        for version, files in sorted(complete.items()):
            target = final / str(version)
            if (target / MANIFEST_FILE).is_file():
                continue
            if target.exists():  # not something a sync leaves behind: replace it
                self._remove(target)
            if self._install(name, version, files, final, report):
                report.added.append((name, version))

    def _install(self, name: str, version: int, files: dict[str, Obj], parent: Path,
                 report: SyncReport) -> bool:
        """Download, verify and rename one version into `parent`; False if it is not there."""
        signature = tuple(sorted((f, o.etag, o.size) for f, o in files.items()))
        seen = self._refused.get((name, version))
        if seen is not None and seen[0] == signature:
            return False  # refused before and unchanged since
        work = Path(tempfile.mkdtemp(prefix=f"{name}-{version}-", dir=self.root / TMP_DIR))
        try:
            os.chmod(work, 0o755)
            try:
                self._download_version(files, work)
            except _Refused as exc:
                self._refused[(name, version)] = (signature, str(exc))
                report.refused.append((name, version, str(exc)))
                return False
            except (S3RegistryError, OSError) as exc:  # transient: tried again next sync
                log.warning("could not sync %s v%d from %s: %s", name, version,
                            self.registry, exc)
                return False
            self._refused.pop((name, version), None)
            _check_inside(self.root, parent / str(version))
            return _rename_into_place(work, parent / str(version)) or (
                parent / str(version) / MANIFEST_FILE).is_file()
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _download_version(self, files: dict[str, Obj], work: Path) -> None:
        data, _ = self.registry.get_bytes(files[MANIFEST_FILE].key)
        try:
            manifest = parse_manifest(data)
        except ValueError as exc:
            raise _Refused(str(exc)) from None
        if MODEL_FILE not in files:
            raise _Refused(f"{MODEL_FILE} is missing")
        for fname, obj in sorted(files.items()):
            if fname == MANIFEST_FILE:
                continue
            size, digest = self.registry.download(obj.key, work / fname)
            if size != obj.size:
                raise _Refused(f"{fname} has {size} bytes, the listing said {obj.size}")
            if fname == MODEL_FILE and digest != manifest.sha256:
                raise _Refused(f"checksum mismatch: manifest says sha256 "
                               f"{manifest.sha256[:16]}..., {MODEL_FILE} has {digest[:16]}...")
        (work / MANIFEST_FILE).write_bytes(data)  # last, as when publishing

    def _sync_file(self, obj: Obj, dest: Path, listed_at: float, report: SyncReport) -> None:
        """Copy a small mutable file (model.toml, routing state) if it changed. A cached file
        written after the listing (by this replica or another) is left for the next sync."""
        if dest.is_file() and self._etags.get(obj.key) == (obj.etag, file_stamp(dest)):
            return  # as this process left it, and unchanged in the bucket
        if dest.is_file() and not _older_than(dest, listed_at):
            return
        try:
            data, etag = self.registry.get_bytes(obj.key)
        except S3RegistryError as exc:
            log.warning("could not sync %s: %s", obj.key, exc)
            return
        _check_inside(self.root, dest)
        with contextlib.suppress(OSError):
            if dest.read_bytes() == data:  # unchanged: keep its mtime (pollers compare it)
                self._etags[obj.key] = (etag, file_stamp(dest))
                return
        write_atomic(dest, data)
        self._etags[obj.key] = (etag, file_stamp(dest))
        report.files.append(str(dest.relative_to(self.root)))

    def _remove(self, path: Path) -> None:
        """Rename out of sight first (readers never see half a directory), then delete."""
        _check_inside(self.root, path)
        trash = self.root / TMP_DIR / f"del-{uuid.uuid4().hex}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return  # another process removed it
        shutil.rmtree(trash, ignore_errors=True)


def _rename_into_place(src: Path, dst: Path) -> bool:
    """Rename a finished directory into place; False (and nothing changed) if `dst` exists,
    e.g. because another process sharing the cache installed it first."""
    if dst.exists():
        return False
    try:
        os.rename(src, dst)  # fails on a non-empty target directory
    except OSError:
        if dst.exists():
            return False
        raise
    return True


def _check_inside(root: Path, path: Path) -> None:
    """Names are validated before paths are built; this is the belt to those braces."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise S3RegistryError(f"refusing to write outside the cache: {path}")


def _older_than(path: Path, t: float) -> bool:
    try:
        return path.stat().st_mtime < t
    except OSError:
        return False


def _clean_stale(tmp: Path) -> None:
    """Leftovers of processes that died mid-download."""
    cutoff = time.time() - _STALE_TMP_S
    for path in tmp.iterdir():
        if _older_than(path, cutoff):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock shared by the processes using one cache (no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
