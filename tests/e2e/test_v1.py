"""TensorFlow-Serving-style V1 predict and status."""

from __future__ import annotations

import numpy as np
import orjson

from tests.e2e.reference import estimator


def test_instances_row_form(client) -> None:
    est, x_all = estimator("iris")
    x = x_all[[0, 60, 120]]
    r = client.post("/v1/models/iris:predict", content=orjson.dumps({"instances": x.tolist()}))
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["label"] for p in preds] == est.predict(x).tolist()
    proba = np.array([p["probabilities"] for p in preds])
    np.testing.assert_allclose(proba, est.predict_proba(x), atol=1e-5)


def test_inputs_columnar_form_and_named_instances(client) -> None:
    est, x_all = estimator("diabetes")
    x = x_all[:4]
    r = client.post("/v1/models/diabetes/versions/1:predict",
                    content=orjson.dumps({"inputs": {"input": x.tolist()}}))
    assert r.status_code == 200, r.text
    got = np.array(r.json()["outputs"]).ravel()
    np.testing.assert_allclose(got, est.predict(x), rtol=1e-4, atol=1e-3)
    r = client.post("/v1/models/diabetes:predict",
                    content=orjson.dumps({"instances": [{"input": row} for row in x.tolist()]}))
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["predictions"]).ravel(), est.predict(x),
                               rtol=1e-4, atol=1e-3)


def test_v1_status(client) -> None:
    doc = client.get("/v1/models/iris").json()
    assert doc["model_version_status"][0]["version"] == "1"
    assert doc["model_version_status"][0]["state"] == "AVAILABLE"
    assert client.get("/v1/models/iris/versions/3").status_code == 404
