"""Worker processes import the installed package, whatever the current directory holds."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import run_server

pytestmark = pytest.mark.e2e


def test_workers_ignore_a_serving_folder_in_the_cwd(models_dir: Path, tmp_path: Path) -> None:
    # A source checkout without its compiled kernels (or any folder named serving/) in the cwd
    # must not shadow the package the supervisor runs from.
    cwd = tmp_path / "checkout"
    (cwd / "serving").mkdir(parents=True)
    (cwd / "serving" / "__init__.py").write_text("")
    with run_server(models_dir, tmp_path, "--workers", "2", cwd=cwd) as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        r = c.post("/v2/models/iris/infer", json={"inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]})
        assert r.status_code == 200, r.text
    assert "No module named" not in s.log()
