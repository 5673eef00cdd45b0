"""Starting a server: a port in use is one clear line and exit status 1, with or without workers."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_exits_1(tmp_path: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-P", "-m", "serving", "serve", "--registry", str(tmp_path),
             "--port", str(port), "--workers", workers, "--grpc-port", "0"],
            capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert f"cannot serve on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr
