"""Every bad request gets the right 4xx and a JSON error that says what was wrong; the next
request is served normally."""

from __future__ import annotations

import math

import httpx
import numpy as np
import orjson
import pytest

GOOD = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                 "data": [5.1, 3.5, 1.4, 0.2]}]})


def _req(**tensor) -> bytes:
    base = {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
    base.update(tensor)
    return orjson.dumps({"inputs": [{k: v for k, v in base.items() if v is not None}]})


NAN_BLOB = np.array([[1.0, math.nan, 2.0, 3.0]], np.float32).tobytes()
NAN_HEAD = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                     "parameters": {"binary_data_size": 16}}]})

# (id, method, path, body, headers, status, words the error must contain)
CASES = [
    ("malformed-json", "POST", "/v2/models/iris/infer", b'{"inputs": [', {}, 400,
     "malformed JSON"),
    ("empty-body", "POST", "/v2/models/iris/infer", b"", {}, 400, "empty request body"),
    ("not-an-object", "POST", "/v2/models/iris/infer", b"[1, 2]", {}, 400, "JSON object"),
    ("no-inputs", "POST", "/v2/models/iris/infer", b'{"inputs": []}', {}, 400, "'inputs'"),
    ("missing-input", "POST", "/v2/models/alltypes/infer", _req(name="x_FP32", shape=[2, 2]),
     {}, 400, "missing input"),
    ("unknown-input", "POST", "/v2/models/iris/infer", _req(name="features"), {}, 400,
     "unknown input 'features'"),
    ("wrong-datatype", "POST", "/v2/models/iris/infer", _req(datatype="FP64"), {}, 400,
     "expected datatype FP32, got FP64"),
    ("bad-datatype", "POST", "/v2/models/iris/infer", _req(datatype="FLOAT"), {}, 400,
     "unknown datatype 'FLOAT'"),
    ("wrong-rank", "POST", "/v2/models/iris/infer", _req(shape=[4]), {}, 400,
     "expected shape [-1, 4], got [4]"),
    ("wrong-feature-count", "POST", "/v2/models/iris/infer",
     _req(shape=[1, 5], data=[1, 2, 3, 4, 5]), {}, 400, "expected shape [-1, 4], got [1, 5]"),
    ("data-length-mismatch", "POST", "/v2/models/iris/infer", _req(shape=[2, 4]), {}, 400,
     "'data' has 4 elements but shape [2, 4] needs 8"),
    ("ragged-data", "POST", "/v2/models/iris/infer", _req(data=[[1, 2], [3]]), {}, 400,
     "ragged"),
    ("strings-for-numbers", "POST", "/v2/models/iris/infer", _req(data=["a", "b", "c", "d"]),
     {}, 400, "must hold numbers"),
    ("negative-shape", "POST", "/v2/models/iris/infer", _req(shape=[-1, 4]), {}, 400,
     "non-negative"),
    ("nan-literal", "POST", "/v2/models/iris/infer",
     b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[NaN,1,2,3]}]}', {},
     400, "malformed JSON"),
    ("fp32-overflow", "POST", "/v2/models/iris/infer", _req(data=[1e39, 1, 2, 3]), {}, 400,
     "out-of-range values for FP32"),
    ("nan-binary", "POST", "/v2/models/iris/infer", NAN_HEAD + NAN_BLOB,
     {"Inference-Header-Content-Length": str(len(NAN_HEAD))}, 400, "NaN or Infinity"),
    ("unknown-model", "POST", "/v2/models/nope/infer", GOOD, {}, 404, "unknown model 'nope'"),
    ("unknown-version", "POST", "/v2/models/iris/versions/9/infer", GOOD, {}, 404,
     "no loaded version 9"),
    ("malformed-version", "POST", "/v2/models/iris/versions/x1/infer", GOOD, {}, 404,
     "invalid model version"),
    ("path-traversal-model", "GET", "/v2/models/..%2F..%2Fetc", b"", {}, 404, "no route"),
    ("dotdot-model", "POST", "/v2/models/%2E%2E/infer", GOOD, {}, 404, "unknown model '..'"),
    ("wrong-method", "GET", "/v2/models/iris/infer", b"", {}, 405, "POST"),
    ("wrong-method-health", "DELETE", "/v2/health/live", b"", {}, 405, "not allowed"),
    ("header-length-too-big", "POST", "/v2/models/iris/infer", GOOD,
     {"Inference-Header-Content-Length": "100000"}, 400, "does not fit"),
    ("header-length-not-int", "POST", "/v2/models/iris/infer", GOOD,
     {"Inference-Header-Content-Length": "abc"}, 400, "non-negative integer"),
    ("header-length-cuts-json", "POST", "/v2/models/iris/infer", GOOD,
     {"Inference-Header-Content-Length": "20"}, 400, "malformed JSON"),
    ("binary-size-past-end", "POST", "/v2/models/iris/infer", NAN_HEAD + NAN_BLOB[:8],
     {"Inference-Header-Content-Length": str(len(NAN_HEAD))}, 400, "past the end"),
    ("binary-extra-bytes", "POST", "/v2/models/iris/infer", NAN_HEAD + NAN_BLOB + b"xx",
     {"Inference-Header-Content-Length": str(len(NAN_HEAD))}, 400, "no input claims"),
    ("unknown-output", "POST", "/v2/models/iris/infer",
     orjson.dumps({"inputs": orjson.loads(GOOD)["inputs"], "outputs": [{"name": "nope"}]}),
     {}, 400, "unknown output 'nope'"),
    ("bad-timeout", "POST", "/v2/models/iris/infer",
     orjson.dumps({"inputs": orjson.loads(GOOD)["inputs"], "parameters": {"timeout": "soon"}}),
     {}, 400, "timeout"),
    ("too-many-rows", "POST", "/v2/models/iris/infer",
     _req(shape=[65, 4], data=[[1.0, 2.0, 3.0, 4.0]] * 65), {}, 400, "max_batch_size"),
    ("v1-no-instances", "POST", "/v1/models/iris:predict", b'{"foo": 1}', {}, 400,
     "'instances'"),
    ("v1-wrong-width", "POST", "/v1/models/iris:predict", b'{"instances": [[1, 2, 3]]}', {},
     400, "expected shape [-1, 4], got [1, 3]"),
    ("v1-unknown-model", "POST", "/v1/models/nope:predict", b'{"instances": [[1]]}', {}, 404,
     "unknown model"),
    ("no-route", "GET", "/v3/whatever", b"", {}, 404, "no route"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "words"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_bad_request_then_good(client: httpx.Client, method, path, body, headers, status,
                               words) -> None:
    r = client.request(method, path, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert words in error, error
    good = client.post("/v2/models/iris/infer", content=GOOD)
    assert good.status_code == 200
    assert good.json()["outputs"][0]["data"] == [0]


def test_oversized_body_is_413(models_dir, tmp_path) -> None:
    from tests.conftest import run_server

    with run_server(models_dir, tmp_path, "--max-body-bytes", "4096") as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        big = _req(shape=[1000, 4], data=[[1.0, 2.0, 3.0, 4.0]] * 1000)
        assert len(big) > 4096
        r = c.post("/v2/models/iris/infer", content=big)
        assert r.status_code == 413
        assert "exceeds the 4096 byte limit" in r.json()["error"]
        assert c.post("/v2/models/iris/infer", content=GOOD).status_code == 200
