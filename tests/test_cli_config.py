"""Settings precedence (flags > SERVING_* env > TOML > defaults), --help, and the Dockerfile."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from serving.config import ServerConfig, load_server_config

ROOT = Path(__file__).resolve().parent.parent


def test_precedence_flags_env_file_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "serving.toml"
    toml.write_text('[server]\nport = 7000\nhost = "0.0.0.0"\nlog_level = "warning"\n')
    cfg = load_server_config({"port": None}, env={}, config_file=str(toml))
    assert (cfg.port, cfg.host, cfg.log_level) == (7000, "0.0.0.0", "warning")
    cfg = load_server_config({}, env={"SERVING_PORT": "7100"}, config_file=str(toml))
    assert (cfg.port, cfg.host) == (7100, "0.0.0.0")
    cfg = load_server_config({"port": 7200}, env={"SERVING_PORT": "7100"},
                             config_file=str(toml))
    assert cfg.port == 7200
    assert load_server_config({}, env={}) == ServerConfig()


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="port"):
        load_server_config({"port": 70000}, env={})
    toml = tmp_path / "bad.toml"
    toml.write_text("[server]\nprot = 1\n")
    with pytest.raises(ValueError, match="unknown settings"):
        load_server_config({}, env={}, config_file=str(toml))
    with pytest.raises(ValueError, match="needs --prometheus-url"):
        load_server_config({"rollout_metrics": "prometheus"}, env={})
    with pytest.raises(ValueError, match="'local' or 'prometheus'"):
        load_server_config({"rollout_metrics": "graphite"}, env={})


def test_serve_help_lists_every_setting_and_its_env_var() -> None:
    out = subprocess.run([sys.executable, "-m", "serving", "serve", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for name in ServerConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in out
        assert f"SERVING_{name.upper()}" in out


def test_bad_flag_value_exits_2_with_message() -> None:
    r = subprocess.run([sys.executable, "-m", "serving", "serve", "--port", "99999"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "port must be" in r.stderr


def test_dockerfile_matches_readme_entry_point_and_port() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^FROM .* AS build", docker, re.M), "multi-stage build"
    assert re.search(r"^USER (?!root)\w+", docker, re.M), "runs as a non-root user"
    health = re.search(r"^HEALTHCHECK .*\n.*$", docker, re.M)
    assert health and "/v2/health/live" in health.group(0)  # never kill a busy (unready) server
    entry = re.search(r"^ENTRYPOINT (\[.*\])", docker, re.M)
    assert entry and '"serving"' in entry.group(1) and '"serve"' in entry.group(1)
    assert re.search(r"^EXPOSE 8000 8001$", docker, re.M)  # HTTP, gRPC
    assert "--port\", \"8000\"" in docker or "SERVING_PORT=8000" in docker
    assert "serving serve" in readme and "8000" in readme
    assert "docker run" in readme and "-p 8000:8000" in readme
