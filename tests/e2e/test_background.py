"""A background task that fails is logged and started again, through real worker processes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import run_server, wait_for

pytestmark = pytest.mark.e2e


def test_the_metrics_snapshot_writer_survives_its_directory_vanishing(
    registry_copy: Path, tmp_path: Path
) -> None:
    for other in ("forest", "digits", "alltypes", "diabetes"):
        shutil.rmtree(registry_copy / other)
    run_root = tmp_path / "tmp"
    run_root.mkdir()
    with run_server(registry_copy, tmp_path, "--workers", "2",
                    env={"TMPDIR": str(run_root)}) as s:
        (metrics,) = run_root.glob("serving-workers-*/metrics")
        wait_for(lambda: len(list(metrics.glob("*.json"))) == 2)
        shutil.rmtree(metrics)  # every write fails now (as on a full or unmounted disk)
        wait_for(lambda: "background task 'metrics snapshots' failed" in s.log(), timeout=30)
        metrics.mkdir()
        # restarted after its back-off delay: both workers write their snapshots again
        wait_for(lambda: len(list(metrics.glob("*.json"))) == 2, timeout=30)
