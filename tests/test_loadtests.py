"""Smoke run of loadtests/locustfile.py against a real server: every scenario, zero failures."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

LOCUSTFILE = Path(__file__).resolve().parents[1] / "loadtests" / "locustfile.py"
# One request name per scenario and mix case; a scenario that sends nothing fails the test.
REQUEST_NAMES = {
    "v2-json iris", "v2-binary iris", "v1 iris", "canary iris",
    "mix iris x1", "mix forest x1", "mix forest x8", "mix digits x1", "mix digits x16",
    "mix diabetes x4",
}

# locust runs in its own process (importing it here would monkey-patch this one with gevent); it is
# a test dependency, so a missing locust fails these tests rather than skipping them.
pytestmark = pytest.mark.e2e


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_every_scenario_answers_correctly(server, tmp_path: Path) -> None:
    # 10 users = the sum of the class weights (3+2+2+2+1): one canary user, three v2-json ...
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-H", server.url, "-u", "10", "-r", "10", "-t", "4s", "--stop-timeout", "5",
        "--csv", str(tmp_path / "run"), "--exit-code-on-error", "1", "--only-summary",
    ]
    # cwd: locust reads ./locust.conf and ./pyproject.toml; run it where there are none.
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, log

    stats = {row["Name"]: row for row in _read_csv(tmp_path / "run_stats.csv")}
    for name in REQUEST_NAMES:
        assert name in stats, f"no requests named {name!r}:\n{log}"
        assert int(stats[name]["Request Count"]) > 0, name
        assert int(stats[name]["Failure Count"]) == 0, name
    assert int(stats["Aggregated"]["Failure Count"]) == 0, log
    assert _read_csv(tmp_path / "run_failures.csv") == []
    assert _read_csv(tmp_path / "run_exceptions.csv") == []

    # The canary user's routing key was answered, always by one version the server serves.
    served = set(httpx.get(f"{server.url}/v2/models/iris", timeout=10).json()["versions"])
    routing = _read_csv(tmp_path / "run_routing.csv")
    assert routing, log
    assert {row["model_version"] for row in routing} <= served
    assert sum(int(row["routing_keys"]) for row in routing) == 1
    # >=: locust 2.18 rewrites the CSVs once a second, so they may miss the last second.
    canary_requests = sum(int(row["requests"]) for row in routing)
    assert canary_requests >= int(stats["canary iris"]["Request Count"])


def test_the_readmes_report_folder_is_in_the_repository() -> None:
    """`--csv loadtests/reports/run` needs the folder: a fresh clone must have it."""
    import re

    root = LOCUSTFILE.parents[1]
    for readme in (root / "README.md", root / "loadtests" / "README.md"):
        for prefix in re.findall(r"--csv (\S+)", readme.read_text()):
            folder = Path(prefix).parent
            tracked = subprocess.run(["git", "ls-files", "--", str(folder)], cwd=root,
                                     capture_output=True, text=True)
            if tracked.returncode != 0:
                pytest.skip("not a git checkout")
            assert tracked.stdout.strip(), f"{readme.name}: {folder} is not in the repository"
