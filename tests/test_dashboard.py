"""Every metric the Grafana dashboard and the alert rules query exists, with samples, on a real
server that has served traffic through primary, canary and shadow versions during a rollout."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
import yaml

from serving.packaging.examples import publish_worse
from serving.packaging.publish import publish_version
from serving.registry.manifest import read_manifest
from serving.registry.rollout_state import RolloutSummary
from serving.registry.routing_state import RoutingState, Shadow, write_routing
from tests.conftest import run_server

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"\b(serving_[a-z0-9_]+)\b")


def queried_names() -> set[str]:
    dash = json.loads((ROOT / "deploy/grafana/serving-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) > 20
    return {n for e in exprs for n in NAME.findall(e)}


def test_every_queried_metric_is_exported(registry_copy: Path, tmp_path: Path) -> None:
    for other in ("forest", "digits", "alltypes"):
        shutil.rmtree(registry_copy / other)
    m = read_manifest(registry_copy / "iris/1/manifest.json")
    canary = publish_version(registry_copy, replace(m, version=0),
                             (registry_copy / "iris/1/model.onnx").read_bytes())
    shadow = publish_worse(registry_copy, "iris")
    # The registry remembers finished rollouts (delivery metrics read them from there).
    past = [
        {"id": "a", "candidate": 2, "baseline": 1, "outcome": "promoted", "duration_s": 600.0,
         "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:10:00+00:00"},
        {"id": "b", "candidate": 3, "baseline": 1, "outcome": "rolled_back", "duration_s": 90.0,
         "time_to_restore_s": 30.0, "started_at": "2026-01-02T00:00:00+00:00",
         "finished_at": "2026-01-02T00:01:30+00:00"},
    ]
    write_routing(registry_copy, "iris", RoutingState(
        primary=1, canary=canary, canary_weight=50.0, shadows=[Shadow(shadow, 1.0)],
        past_rollouts=[RolloutSummary.from_json(p) for p in past]))
    toml = registry_copy / "iris/model.toml"
    toml.write_text(toml.read_text().replace('policy = "latest"', 'policy = "all"'))
    body = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                     "data": [6.0, 2.9, 4.5, 1.5]}]})
    with run_server(registry_copy, tmp_path, "--admin-open") as s, \
            httpx.Client(base_url=s.url) as c:
        for i in range(200):
            r = c.post("/v2/models/iris/infer", content=body, headers={"x-routing-key": str(i)})
            assert r.status_code == 200
        assert c.post("/v2/models/iris/infer", content=b"{").status_code == 400
        c.post("/v2/models/diabetes/infer", content=orjson.dumps({
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": [0] * 10}],
            "parameters": {"timeout": 1}}))  # a 1 us deadline: rejected as timed out
        r = c.post("/v2/models/iris/rollout", json={"candidate": canary, "steps": "10",
                                                    "step_duration_s": 600})
        assert r.status_code == 200, r.text
        text = c.get("/metrics").text
    sampled = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
               if line and not line.startswith("#")}
    missing = sorted(queried_names() - sampled)
    assert not missing, f"queried but not exported with samples: {missing}"
