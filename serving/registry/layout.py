"""Where things live in a registry directory, and which names are allowed there.

A model or version name never escapes the registry: names are checked against a strict pattern
before any path is built from them.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from serving.errors import BadRequest, NotFound

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "model.toml"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_VERSION = re.compile(r"[1-9][0-9]{0,8}")


def is_model_name(name: str) -> bool:
    """True for names made of letters, digits, `_`, `-` and `.`, not starting with a dot."""
    return _NAME.fullmatch(name) is not None and ".." not in name


def is_version(text: str) -> bool:
    """True for a version directory's name: a positive integer without sign or leading zeros."""
    return _VERSION.fullmatch(text) is not None


def write_atomic(path: Path, data: bytes, fsync: bool = False) -> None:
    """Replace `path` with `data` whole: readers see the old bytes or the new, never half (a
    temp file unique to this process and thread, then a rename). `fsync`: the bytes reach the
    disk before the rename (what a crash must not lose, e.g. payload log segments)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_stamp(path: Path) -> tuple[int, int, int]:
    """(inode, mtime_ns, size) of a file, (0, 0, 0) when absent: what pollers compare. A rewrite
    of the same size within the timestamp's granularity keeps the other two; an atomic replace
    (`write_atomic`, an editor's save-and-rename) always brings a new inode."""
    try:
        st = path.stat()
    except OSError:
        return (0, 0, 0)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def check_model_name(name: str) -> str:
    if not is_model_name(name):
        raise BadRequest(
            f"invalid model name {name[:64]!r}: use letters, digits, '_', '-', '.' (max 128)"
        )
    return name


def parse_version(text: str) -> int:
    """A version is a positive integer written without sign or leading zeros."""
    if not isinstance(text, str) or _VERSION.fullmatch(text) is None:
        raise NotFound(f"invalid model version {str(text)[:32]!r}: versions are positive integers")
    return int(text)


class Layout:
    """Paths inside one registry directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def model_dir(self, model: str) -> Path:
        return self.root / check_model_name(model)

    def version_dir(self, model: str, version: int) -> Path:
        return self.model_dir(model) / str(int(version))

    def config_path(self, model: str) -> Path:
        return self.model_dir(model) / CONFIG_FILE

    def model_names(self) -> list[str]:
        """Model directories in the registry, sorted; other entries are ignored."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and is_model_name(p.name)
        )

    def versions(self, model: str) -> list[int]:
        """Published versions of a model (directories named by an integer), ascending."""
        d = self.model_dir(model)
        if not d.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in d.iterdir()
            if p.is_dir() and _VERSION.fullmatch(p.name) and (p / MANIFEST_FILE).is_file()
        )
