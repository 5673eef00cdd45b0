"""The V2 wire format with a raw HTTP client: JSON and binary tensors of every datatype."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from tests.e2e.models import ONNX_TYPES
from tests.e2e.reference import estimator

SAMPLES = {
    "BOOL": [[True, False], [False, True]],
    "INT8": [[-128, 127], [0, 1]],
    "INT16": [[-32768, 32767], [5, -5]],
    "INT32": [[-(2**31), 2**31 - 1], [7, 8]],
    "INT64": [[-(2**63), 2**63 - 1], [9, 10]],
    "UINT8": [[0, 255], [1, 2]],
    "UINT16": [[0, 65535], [3, 4]],
    "UINT32": [[0, 2**32 - 1], [5, 6]],
    "UINT64": [[0, 2**63 - 1], [7, 8]],  # TODO: JSON values above 2**63-1 (numpy infers float)
    "FP16": [[0.5, -2.0], [65504.0, 0.25]],
    "FP32": [[1.5, -2.25], [3.0e38, 1e-7]],
    "FP64": [[1.5, -2.25], [1e300, 5e-324]],
    "BYTES": [["a", "héllo"], ["", "x y z"]],
}
DTYPES = {
    "BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}


def _all_types_request(nested: bool) -> dict:
    inputs = []
    for dt in ONNX_TYPES:
        data = SAMPLES[dt] if nested else [x for row in SAMPLES[dt] for x in row]
        inputs.append({"name": f"x_{dt}", "datatype": dt, "shape": [2, 2], "data": data})
    return {"id": "all", "inputs": inputs}


@pytest.mark.parametrize("nested", [True, False], ids=["nested", "flat"])
def test_every_datatype_round_trips_as_json(client, nested: bool) -> None:
    r = client.post("/v2/models/alltypes/infer", content=orjson.dumps(_all_types_request(nested)))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["id"] == "all"
    outputs = {o["name"]: o for o in doc["outputs"]}
    for dt in ONNX_TYPES:
        out = outputs[f"y_{dt}"]
        assert out["datatype"] == dt
        assert out["shape"] == [2, 2]
        want = [x for row in SAMPLES[dt] for x in row]
        if dt in ("FP16", "FP32"):  # compare at the tensor's precision
            np.testing.assert_array_equal(np.asarray(out["data"], DTYPES[dt]),
                                          np.asarray(want, DTYPES[dt]))
        else:
            assert out["data"] == want, dt
        assert "parameters" not in out  # perf_analyzer rejects JSON outputs with bare parameters


def _binary_body(tensors: dict[str, tuple[str, list[int], bytes]], outputs_binary: bool):
    inputs, blobs = [], []
    for name, (dt, shape, blob) in tensors.items():
        inputs.append({"name": name, "datatype": dt, "shape": shape,
                       "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    head = orjson.dumps({"inputs": inputs,
                         "parameters": {"binary_data_output": outputs_binary}})
    return head + b"".join(blobs), len(head)


def _bytes_blob(items: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in items)


def _split_binary(r) -> tuple[dict, bytes]:
    n = int(r.headers["inference-header-content-length"])
    return orjson.loads(r.content[:n]), r.content[n:]


def test_every_datatype_round_trips_as_binary(client) -> None:
    tensors = {}
    for dt in ONNX_TYPES:
        if dt == "BYTES":
            blob = _bytes_blob([x for row in SAMPLES[dt] for x in row])
        else:
            blob = np.asarray(SAMPLES[dt], DTYPES[dt]).tobytes()
        tensors[f"x_{dt}"] = (dt, [2, 2], blob)
    body, n = _binary_body(tensors, outputs_binary=True)
    r = client.post(
        "/v2/models/alltypes/infer", content=body,
        headers={"Inference-Header-Content-Length": str(n),
                 "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    head, tail = _split_binary(r)
    offset = 0
    for out in head["outputs"]:
        size = out["parameters"]["binary_data_size"]
        blob = tail[offset : offset + size]
        offset += size
        dt = out["datatype"]
        assert blob == tensors["x" + out["name"][1:]][2], dt
    assert offset == len(tail)


def test_binary_input_json_output_and_per_output_choice(client) -> None:
    est, x_all = estimator("iris")
    x = np.ascontiguousarray(x_all[:3])
    blob = x.tobytes()
    head = orjson.dumps({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 4],
                    "parameters": {"binary_data_size": len(blob)}}],
        "outputs": [{"name": "label"},
                    {"name": "probabilities", "parameters": {"binary_data": True}}],
    })
    r = client.post("/v2/models/iris/infer", content=head + blob,
                    headers={"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 200, r.text
    doc, tail = _split_binary(r)
    label, _proba = doc["outputs"]
    assert label["data"] == est.predict(x).tolist()
    got = np.frombuffer(tail, np.float32).reshape(3, 3)
    np.testing.assert_allclose(got, est.predict_proba(x), atol=1e-5)


def test_raw_binary_body_with_header_length_zero(client) -> None:
    est, x_all = estimator("iris")
    x = np.ascontiguousarray(x_all[10:14])
    r = client.post("/v2/models/iris/infer", content=x.tobytes(),
                    headers={"Inference-Header-Content-Length": "0"})
    assert r.status_code == 200, r.text
    doc, tail = _split_binary(r)
    sizes = [o["parameters"]["binary_data_size"] for o in doc["outputs"]]
    labels = np.frombuffer(tail[: sizes[0]], np.int64)
    np.testing.assert_array_equal(labels, est.predict(x))


def test_json_sent_as_octet_stream_is_json(client) -> None:
    body = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                     "data": [5.1, 3.5, 1.4, 0.2]}]})
    r = client.post("/v2/models/iris/infer", content=body,
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [0]


def test_large_json_tensor_matches_sklearn(client) -> None:
    est, x_all = estimator("digits")
    x = np.ascontiguousarray(x_all[:64])
    for nested in (True, False):
        data = x.tolist() if nested else x.ravel().tolist()
        body = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                         "shape": [64, 64], "data": data}]})
        r = client.post("/v2/models/digits/infer", content=body)
        assert r.status_code == 200, r.text
        outputs = {o["name"]: o for o in r.json()["outputs"]}
        assert outputs["label"]["data"] == est.predict(x).tolist()
        proba = np.asarray(outputs["probabilities"]["data"]).reshape(64, 10)
        np.testing.assert_allclose(proba, est.predict_proba(x), atol=1e-5)


def test_metadata_ready_and_config_routes(client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2/models/digits/versions/1").json()
    assert meta["name"] == "digits" and meta["versions"] == ["1"]
    assert meta["inputs"][0]["shape"] == [-1, 64]
    assert client.get("/v2/models/digits/versions/1/ready").status_code == 200
    config = client.get("/v2/models/alltypes/config").json()
    types = {i["name"]: i["data_type"] for i in config["input"]}
    assert types["x_BYTES"] == "TYPE_STRING" and types["x_FP16"] == "TYPE_FP16"
    extensions = client.get("/v2").json()["extensions"]
    assert set(extensions) == {
        "binary_tensor_data", "classification", "model_configuration", "model_repository",
        "schedule_policy", "statistics",
    }
