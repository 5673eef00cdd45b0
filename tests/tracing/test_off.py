"""Tracing off (the default) never imports OpenTelemetry: the server's modules, its app and a
scheduler come up without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # starts a Python process

ROOT = Path(__file__).resolve().parents[2]
CODE = """
import sys
import serving.cli, serving.http.server, serving.supervisor
from serving.config import ServerConfig
from serving.http.app import create_app
from serving import tracing
app = create_app(ServerConfig(registry=sys.argv[1]))
assert tracing.active() is None
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""


def test_off_imports_no_opentelemetry(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-P", "-c", CODE, str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
