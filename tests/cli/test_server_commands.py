"""`serving models` and `serving rollout` against a real server: pipes, URL and token."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningServer, run_server

pytestmark = pytest.mark.e2e


def _serving(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("SERVING_URL", "SERVING_ADMIN_TOKEN")}
    return subprocess.run([sys.executable, "-m", "serving", *args], capture_output=True,
                          text=True, timeout=60, env={**clean, **(env or {})})


@pytest.fixture(scope="module")
def guarded(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with run_server(models_dir, tmp_path_factory.mktemp("guarded"), "--admin-token", "t0k") as s:
        yield s


@pytest.mark.parametrize("command", [
    pytest.param(["models", "list"], id="models-list"),
    pytest.param(["models", "show", "iris"], id="models-show"),
    pytest.param(["rollout", "history", "iris"], id="rollout-history"),
])
def test_a_closed_pipe_ends_quietly(
    server: RunningServer, models_dir: Path, command: list[str]
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", *command, "--registry", str(models_dir), "--url",
         server.url] if command[0] == "models" else
        [sys.executable, "-m", "serving", *command, "--url", server.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before anything is written (`| head -0`)
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(60) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_head_of_models_list(models_dir: Path) -> None:
    done = subprocess.run(
        f"{sys.executable} -m serving models list --registry {models_dir} | head -1",
        shell=True, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_401_says_how_to_pass_the_token(guarded: RunningServer, models_dir: Path) -> None:
    done = _serving("models", "list", "--registry", str(models_dir), "--url", guarded.url)
    assert done.returncode == 1
    assert "401" in done.stderr and "pass --token TOKEN or set SERVING_ADMIN_TOKEN" in done.stderr
    done = _serving("models", "list", "--registry", str(models_dir), "--url", guarded.url,
                    "--token", "wrong")
    assert done.returncode == 1 and "not this server's admin token" in done.stderr
    assert "wrong" not in done.stderr.replace("wrong)", "")


def test_server_url_and_token_from_the_environment(
    guarded: RunningServer, models_dir: Path
) -> None:
    done = _serving("rollout", "history", "iris", env={"SERVING_URL": guarded.url})
    assert done.returncode == 1 and "SERVING_ADMIN_TOKEN" in done.stderr, done.stderr
    env = {"SERVING_URL": guarded.url, "SERVING_ADMIN_TOKEN": "t0k"}
    done = _serving("rollout", "history", "iris", env=env)
    assert done.returncode == 0 and "model iris: 0 rollouts" in done.stdout, done.stderr
    done = _serving("models", "list", "--registry", str(models_dir), env=env)
    assert done.returncode == 0 and "iris\tv1\tREADY" in done.stdout, done.stderr
