"""The one batching server the batching e2e modules share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.batching.server import MODELS
from tests.conftest import RunningServer, run_server
from tests.e2e.models import publish


@pytest.fixture(scope="session")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real server over a registry holding every model above."""
    root: Path = tmp_path_factory.mktemp("batching-registry")
    for name, (onnx_bytes, toml) in MODELS.items():
        publish(root, name, onnx_bytes, toml)
    with run_server(root, tmp_path_factory.mktemp("batching-server")) as s:
        yield s
