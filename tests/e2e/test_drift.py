"""Drift and data quality against the training data, and delivery metrics, through a server."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from serving.packaging.publish import publish_version
from serving.registry.manifest import read_manifest
from serving.registry.routing_state import RoutingState, write_routing
from tests.conftest import run_server
from tests.e2e.models import iris_like, publish
from tests.e2e.reference import estimator


def _send(c: httpx.Client, rows: np.ndarray) -> httpx.Response:
    return c.post("/v2/models/iris/infer", content=orjson.dumps({"inputs": [{
        "name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.tolist()}]}))


@pytest.fixture
def iris_registry(registry_copy: Path) -> Path:
    for other in ("forest", "digits", "alltypes"):
        shutil.rmtree(registry_copy / other)
    return registry_copy


def test_reference_traffic_stays_under_and_a_shifted_feature_rises(iris_registry: Path,
                                                                  tmp_path: Path) -> None:
    _, x = estimator("iris")
    rng = np.random.default_rng(7)
    with run_server(iris_registry, tmp_path) as s, httpx.Client(base_url=s.url) as c:
        for _ in range(250):
            assert _send(c, x[rng.integers(0, len(x), 8)]).status_code == 200
        calm = c.get("/v2/models/iris/drift").json()
        shifted_feature = "petal length (cm)"
        j = 2
        sd = x[:, j].std()
        # a fresh window: enough shifted rows to fill it (10,000 rows per half)
        for _ in range(2600):
            rows = x[rng.integers(0, len(x), 8)].copy()
            rows[:, j] += 2 * sd
            assert _send(c, rows).status_code == 200
        drifted = c.get("/v2/models/iris/drift").json()
        metrics = c.get("/metrics").text
    assert calm["available"] and calm["window_rows"] == 2000
    assert all(f["psi"] < calm["psi_threshold"] and not f["drifted"] for f in calm["features"])
    assert calm["outputs"]["label"]["psi"] < calm["psi_threshold"]
    by_name = {f["name"]: f for f in drifted["features"]}
    assert drifted["features"][0]["name"] == shifted_feature  # worst first
    assert by_name[shifted_feature]["psi"] > drifted["psi_threshold"]
    assert by_name[shifted_feature]["out_of_range_share"] > 0.1
    others = [f for n, f in by_name.items() if n != shifted_feature]
    assert all(f["psi"] < drifted["psi_threshold"] for f in others), others
    assert drifted["outputs"]["label"]["psi"] > 0  # predictions moved with the input
    assert f'serving_feature_psi{{feature="{shifted_feature}",model="iris",version="1"}}' \
        in metrics
    assert "serving_model_age_seconds" in metrics


def test_nan_and_out_of_range_rows_are_counted_or_refused(iris_registry: Path,
                                                          tmp_path: Path) -> None:
    toml = iris_registry / "iris" / "model.toml"
    base = toml.read_text()
    toml.write_text(base + "\n[inputs]\nallow_nonfinite = true\n")
    bad = np.array([[np.nan, 3.0, 1.4, 0.2], [5.0, 3.0, 99.0, 0.2]], np.float32)
    head = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
                                     "parameters": {"binary_data_size": bad.nbytes}}]})
    with run_server(iris_registry, tmp_path) as s, httpx.Client(base_url=s.url) as c:
        r = c.post("/v2/models/iris/infer", content=head + bad.tobytes(),
                   headers={"Inference-Header-Content-Length": str(len(head))})
        assert r.status_code == 200
        report = {f["name"]: f for f in c.get("/v2/models/iris/drift").json()["features"]}
    assert report["sepal length (cm)"]["nan_share"] == 0.5
    assert report["petal length (cm)"]["out_of_range_share"] == 0.5

    toml.write_text(base + "\n[inputs]\nreject_out_of_range = true\n")
    with run_server(iris_registry, tmp_path) as s, httpx.Client(base_url=s.url) as c:
        r = _send(c, np.array([[5.0, 3.0, 99.0, 0.2]], np.float32))
        assert r.status_code == 400
        assert "feature 'petal length (cm)' = 99 (row 0) is outside the training range" \
            in r.json()["error"]
        r = c.post("/v2/models/iris/infer", content=head + bad.tobytes(),
                   headers={"Inference-Header-Content-Length": str(len(head))})
        assert r.status_code == 400 and "feature 'sepal length (cm)' is nan" in r.json()["error"]
        assert _send(c, np.array([[5.0, 3.0, 1.4, 0.2]], np.float32)).status_code == 200


def test_model_without_reference_says_drift_is_unavailable(iris_registry: Path,
                                                           tmp_path: Path) -> None:
    publish(iris_registry, "plain", iris_like("slow"))
    with run_server(iris_registry, tmp_path) as s, httpx.Client(base_url=s.url) as c:
        doc = c.get("/v2/models/plain/drift").json()
    assert doc["available"] is False and "no reference data" in doc["reason"]


def test_delivery_metrics_follow_a_scripted_sequence(iris_registry: Path,
                                                     tmp_path: Path) -> None:
    write_routing(iris_registry, "iris", RoutingState(primary=1))
    toml = iris_registry / "iris" / "model.toml"
    toml.write_text(toml.read_text().replace("auto_promote = true", "auto_promote = false"))
    m = read_manifest(iris_registry / "iris/1/manifest.json")
    onnx = (iris_registry / "iris/1/model.onnx").read_bytes()
    v2 = publish_version(iris_registry, replace(m, version=0), onnx)
    v3 = publish_version(iris_registry, replace(m, version=0), onnx)
    v4 = publish(iris_registry, "iris", iris_like("errors"))
    _, x = estimator("iris")
    with run_server(iris_registry, tmp_path, "--admin-open", "--poll", "0.2") as s, \
            httpx.Client(base_url=s.url, timeout=30) as c:
        def start(v: int, steps: str) -> None:
            r = c.post("/v2/models/iris/rollout", json={
                "candidate": v, "steps": steps, "step_duration_s": 0.5, "min_requests": 20,
                "bake_s": 0})
            assert r.status_code == 200, r.text

        start(v2, "10")  # 1: promoted by hand
        assert c.post("/v2/models/iris/rollout/promote").json()["rollout"]["state"] == "promoted"
        start(v3, "10")  # 2: aborted
        assert c.post("/v2/models/iris/rollout/abort").json()["rollout"]["state"] == "aborted"
        start(v4, "50")  # 3: rolled back automatically under traffic
        deadline = time.monotonic() + 60
        while c.get("/v2/models/iris/rollout").json()["rollout"]["state"] == "running":
            assert time.monotonic() < deadline
            _send(c, x[:2])
        history = c.get("/v2/models/iris/rollout/history").json()
        metrics = c.get("/metrics").text
    summary = history["summary"]
    assert [r["outcome"] for r in history["rollouts"]] == ["promoted", "aborted", "rolled_back"]
    assert summary["rollouts"] == 3 and summary["promoted"] == 1
    assert summary["aborted"] == 1 and summary["rolled_back"] == 1
    assert summary["rollback_share"] == pytest.approx(1 / 3, abs=1e-3)
    assert summary["mean_time_to_restore_s"] > 0
    assert summary["mean_time_to_promote_s"] >= 0
    assert 'serving_rollouts_total{model="iris",outcome="rolled_back"} 1.0' in metrics
    assert "serving_rollout_rollback_ratio" in metrics
