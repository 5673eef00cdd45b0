"""Fixtures of the deploy tests: each kustomize build rendered, and a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningServer, run_server
from tests.deploy.kustomize import render
from tests.deploy.objects import BUILDS


@pytest.fixture(scope="package", params=sorted(BUILDS))
def build(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(BUILDS[request.param])


@pytest.fixture(scope="package")
def live_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[RunningServer]:
    with run_server(models_dir, tmp_path_factory.mktemp("deploy")) as s:
        yield s


@pytest.fixture(scope="package")
def exported(live_server: RunningServer) -> set[str]:
    """Sample names on /metrics after one inference request (counters appear once counted)."""
    body = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                     "data": [5.1, 3.5, 1.4, 0.2]}]})
    with httpx.Client(base_url=live_server.url, timeout=10) as c:
        assert c.post("/v2/models/iris/infer", content=body).status_code == 200
        text = c.get("/metrics").text
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}
