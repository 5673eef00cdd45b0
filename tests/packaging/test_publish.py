"""Local publishing: the next free number, whatever else the model directory holds."""

from __future__ import annotations

import threading
from pathlib import Path

from serving.packaging.publish import publish_version
from serving.registry.layout import Layout
from serving.registry.manifest import Manifest, read_manifest
from serving.types import TensorSpec

MANIFEST = Manifest("m", 0, "0" * 64, (TensorSpec("input", "FP32", (-1, 2)),),
                    (TensorSpec("y", "FP32", (-1,)),))


def publish_with_deadline(registry: Path, timeout: float = 10.0) -> int:
    """publish_version in a thread: a loop that never ends fails the test instead of hanging it."""
    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(publish_version(registry, MANIFEST, b"x")),
                         daemon=True)
    t.start()
    t.join(timeout)
    assert out, "publish_version did not return"
    return out[0]


def test_a_numbered_directory_without_a_manifest_is_skipped(tmp_path: Path) -> None:
    assert publish_with_deadline(tmp_path) == 1
    stray = tmp_path / "m" / "2"
    stray.mkdir()
    (stray / "model.onnx").write_bytes(b"half a copy")  # no manifest: not a version
    assert Layout(tmp_path).versions("m") == [1]
    assert publish_with_deadline(tmp_path) == 3
    assert read_manifest(tmp_path / "m" / "3" / "manifest.json").version == 3
    assert (stray / "model.onnx").read_bytes() == b"half a copy"  # left alone
    assert Layout(tmp_path).versions("m") == [1, 3]


def test_an_empty_numbered_directory_is_not_published_over(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    assert publish_with_deadline(tmp_path) == 2
