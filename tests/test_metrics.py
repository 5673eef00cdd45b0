"""/metrics reflects the traffic the server saw (through a real server, parsed with
prometheus_client's own parser)."""

from __future__ import annotations

import orjson
from prometheus_client.parser import text_string_to_metric_families

GOOD = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                 "data": [5.1, 3.5, 1.4, 0.2]}]})


def _samples(client) -> dict[tuple[str, frozenset], float]:
    text = client.get("/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_requests_batches_and_states_are_counted(client) -> None:
    before = _samples(client)
    key_ok = ("serving_requests_total", frozenset(
        {"model": "iris", "version": "1", "route": "primary", "outcome": "success"}.items()))
    key_bad = ("serving_requests_total", frozenset(
        {"model": "iris", "version": "", "route": "primary", "outcome": "client_error"}.items()))
    for _ in range(3):
        assert client.post("/v2/models/iris/infer", content=GOOD).status_code == 200
    assert client.post("/v2/models/iris/infer", content=b"{").status_code == 400
    assert client.post("/v2/models/no-such/infer", content=GOOD).status_code == 404
    after = _samples(client)
    assert after[key_ok] - before.get(key_ok, 0) == 3
    assert after[key_bad] - before.get(key_bad, 0) == 1
    unknown = ("serving_requests_total", frozenset(
        {"model": "_unknown", "version": "", "route": "primary", "outcome": "client_error"}
        .items()))
    assert after[unknown] >= 1
    iris = frozenset({"model": "iris", "version": "1"}.items())
    assert after[("serving_batches_total", iris)] - before.get(("serving_batches_total", iris),
                                                                0) == 3
    count = ("serving_request_duration_seconds_count", frozenset(
        {"model": "iris", "version": "1", "route": "primary"}.items()))
    assert after[count] - before.get(count, 0) == 3
    ready = ("serving_model_state", frozenset(
        {"model": "iris", "version": "1", "state": "READY"}.items()))
    assert after[ready] == 1.0


def test_triton_statistics_extension(client) -> None:
    for _ in range(2):
        assert client.post("/v2/models/diabetes/infer", content=orjson.dumps({"inputs": [{
            "name": "input", "datatype": "FP32", "shape": [1, 10], "data": [0.1] * 10}]})
        ).status_code == 200
    doc = client.get("/v2/models/diabetes/versions/1/stats").json()
    (stats,) = doc["model_stats"]
    assert stats["name"] == "diabetes" and stats["version"] == "1"
    assert stats["inference_stats"]["success"]["count"] >= 2
    assert stats["inference_stats"]["success"]["ns"] > 0
    assert stats["execution_count"] >= 2 and stats["inference_count"] >= 2
    names = {s["name"] for s in client.get("/v2/models/stats").json()["model_stats"]}
    assert {"iris", "diabetes", "digits"} <= names
    assert client.get("/v2/models/diabetes/versions/9/stats").status_code == 404


def test_access_log_is_one_json_line_per_request(models_dir, tmp_path) -> None:
    import json

    import httpx

    from tests.conftest import run_server

    body = orjson.dumps({"id": "req-7", "inputs": [{
        "name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]})
    with run_server(models_dir, tmp_path, "--access-log") as s, httpx.Client(base_url=s.url) as c:
        assert c.post("/v2/models/iris/infer", content=body).status_code == 200
        assert c.post("/v2/models/iris/infer", content=b"{").status_code == 400
        assert c.post("/v1/models/iris:predict",
                      content=b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}').status_code == 200
        s.stop()
        lines = [json.loads(line[line.index("{"):]) for line in s.log().splitlines()
                 if "serving.access" in line]
    assert len(lines) == 3
    ok, bad, v1 = lines
    assert ok["request_id"] == "req-7" and ok["model"] == "iris" and ok["version"] == "1"
    assert ok["route"] == "primary" and ok["status"] == 200 and ok["batch_size"] == 1
    assert {"latency_ms", "decode_ms", "queue_ms", "inference_ms", "encode_ms"} <= set(ok)
    assert bad["status"] == 400 and "batch_size" not in bad
    assert v1["protocol"] == "v1" and v1["status"] == 200


def test_no_access_log_by_default(server) -> None:
    assert "serving.access" not in server.log()
