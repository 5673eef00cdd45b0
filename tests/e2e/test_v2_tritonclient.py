"""The Open Inference Protocol through Triton's own Python client, against a real server."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.e2e.reference import estimator


@pytest.fixture
def triton(server) -> httpclient.InferenceServerClient:
    c = httpclient.InferenceServerClient(server.url.removeprefix("http://"), concurrency=4)
    yield c
    c.close()


def _infer(triton, model, x, binary, outputs=None, version=""):
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outs = None
    if outputs is not None:
        outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in outputs]
    return triton.infer(model, [inp], outputs=outs, model_version=version, request_id="r-1")


def test_server_health_and_metadata(triton) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    meta = triton.get_server_metadata()
    assert "binary_tensor_data" in meta["extensions"]
    model = triton.get_model_metadata("iris")
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    config = triton.get_model_config("iris")
    assert config["max_batch_size"] > 0
    assert config["input"][0]["dims"] == [4]
    assert triton.is_model_ready("iris")
    assert triton.is_model_ready("iris", "1")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("rows", [1, 64])
@pytest.mark.parametrize("model", ["iris", "forest", "digits"])
def test_classifiers_match_sklearn(triton, model: str, rows: int, binary: bool) -> None:
    est, x_all = estimator(model)
    x = np.ascontiguousarray(x_all[::7][:rows])
    result = _infer(triton, model, x, binary)
    assert result.get_response()["model_name"] == model
    assert result.get_response()["model_version"] == "1"
    assert result.get_response()["id"] == "r-1"
    np.testing.assert_array_equal(result.as_numpy("label"), est.predict(x))
    np.testing.assert_allclose(result.as_numpy("probabilities"), est.predict_proba(x), atol=1e-5)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_regressor_matches_sklearn(triton, binary: bool) -> None:
    est, x_all = estimator("diabetes")
    x = np.ascontiguousarray(x_all[:64])
    result = _infer(triton, "diabetes", x, binary)
    got = result.as_numpy("variable").ravel()
    np.testing.assert_allclose(got, est.predict(x), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_output_subset_and_explicit_version(triton, binary: bool) -> None:
    est, x_all = estimator("iris")
    x = np.ascontiguousarray(x_all[:5])
    result = _infer(triton, "iris", x, binary, outputs=["probabilities"], version="1")
    outputs = result.get_response()["outputs"]
    assert [o["name"] for o in outputs] == ["probabilities"]
    assert result.as_numpy("label") is None
    np.testing.assert_allclose(result.as_numpy("probabilities"), est.predict_proba(x), atol=1e-5)


def test_classification_extension(triton) -> None:
    est, x_all = estimator("iris")
    x = np.ascontiguousarray(x_all[[0, 75, 149]])
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    out = httpclient.InferRequestedOutput("probabilities", class_count=2)
    result = triton.infer("iris", [inp], outputs=[out])
    top = result.as_numpy("probabilities")
    assert top.shape == (3, 2)
    proba = est.predict_proba(x)
    names = ["setosa", "versicolor", "virginica"]
    for row, p in zip(top, proba, strict=True):
        score, index, label = row[0].decode().split(":")
        assert int(index) == int(np.argmax(p))
        assert label == names[int(index)]
        assert abs(float(score) - p.max()) < 1e-5


def test_unknown_model_raises_clear_error(triton) -> None:
    x = np.zeros((1, 4), np.float32)
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        _infer(triton, "nope", x, False)
    with pytest.raises(InferenceServerException, match="no loaded version 7"):
        _infer(triton, "iris", x, False, version="7")
