"""`serving package model.onnx`: a hand-converted model with a fixed batch dimension becomes
batchable (or is packaged with a warning saying batching is off, and why), and
`--expected-outputs` checks the file against the outputs the user gives."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from serving.registry.manifest import read_manifest
from tests.conftest import run_server

pytestmark = pytest.mark.e2e  # runs the CLI and a server in processes


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving", *args], capture_output=True,
                          text=True, timeout=180)


def _lightgbm_fixed_batch(tmp_path: Path) -> tuple[Path, np.ndarray, object]:
    """A LightGBM model converted by hand with onnxmltools for one row at a time: [1, 4]."""
    from lightgbm import LGBMClassifier
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = np.digitize(x[:, 0], [-0.5, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = LGBMClassifier(n_estimators=6, verbose=-1).fit(x, y)
        onx = convert_lightgbm(est, initial_types=[("input", FloatTensorType([1, 4]))],
                               zipmap=False)
    assert [d.dim_value for d in onx.graph.input[0].type.tensor_type.shape.dim] == [1, 4]
    path = tmp_path / "lgbm.onnx"
    path.write_bytes(onx.SerializeToString())
    return path, x, est


def test_fixed_batch_dimension_is_made_symbolic_and_served_batched(tmp_path: Path) -> None:
    path, x, est = _lightgbm_fixed_batch(tmp_path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", est.predict_proba(x))  # type: ignore[attr-defined]
    reg = tmp_path / "reg"
    r = _cli("package", str(path), "--name", "lgbm", "--registry", str(reg), "--sample-data",
             str(tmp_path / "x.npy"), "--expected-outputs", str(tmp_path / "expected.npy"),
             "--labels", "low,mid,high")
    assert r.returncode == 0, r.stderr
    assert "parity on 120 rows (expected outputs)" in r.stdout and "passed" in r.stdout
    assert "batching will be off" not in r.stderr
    m = read_manifest(reg / "lgbm/1/manifest.json")
    assert m.batching["batchable"] and m.batching["rewritten"]
    assert m.inputs[0].shape == (-1, 4) and all(t.shape[0] == -1 for t in m.outputs)
    assert m.labels == ("low", "mid", "high")
    with run_server(reg, tmp_path) as server:
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [9, 4],
                            "data": x[:9].ravel().tolist()}]}
        resp = httpx.post(f"{server.url}/v2/models/lgbm/infer", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        outs = {o["name"]: o for o in resp.json()["outputs"]}
        got = np.asarray(outs["probabilities"]["data"]).reshape(9, 3)
        np.testing.assert_allclose(got, est.predict_proba(x[:9]), atol=1e-5)  # type: ignore[attr-defined]
        cfg = httpx.get(f"{server.url}/v2/models/lgbm/config", timeout=30)
        assert cfg.status_code == 200 and cfg.json()["max_batch_size"] > 0, cfg.text


def test_wrong_expected_outputs_fail_parity_and_publish_nothing(tmp_path: Path) -> None:
    path, x, est = _lightgbm_fixed_batch(tmp_path)
    np.save(tmp_path / "x.npy", x)
    wrong = (est.predict(x) + 1) % 3  # type: ignore[attr-defined]
    np.save(tmp_path / "expected.npy", wrong.astype(np.int64))
    r = _cli("package", str(path), "--name", "lgbm", "--registry", str(tmp_path / "reg"),
             "--sample-data", str(tmp_path / "x.npy"), "--expected-outputs",
             str(tmp_path / "expected.npy"))
    assert r.returncode == 1 and "FAILED" in r.stdout and "not published" in r.stderr
    r = _cli("package", str(path), "--name", "lgbm", "--registry", str(tmp_path / "reg"),
             "--expected-outputs", str(tmp_path / "expected.npy"))
    assert r.returncode == 1 and "--expected-outputs goes with" in r.stderr
    assert not (tmp_path / "reg").exists()


def _reshape_to_one_row() -> bytes:
    """A model that really is one row at a time: it reshapes its input to a constant [1, 4]."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 4])
    node = helper.make_node("Reshape", ["input", "shape"], ["output"])
    graph = helper.make_graph([node], "one_row", [x], [y], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_unsound_rewrite_is_packaged_with_a_warning_and_the_reason(tmp_path: Path) -> None:
    (tmp_path / "one.onnx").write_bytes(_reshape_to_one_row())
    r = _cli("package", str(tmp_path / "one.onnx"), "--name", "one", "--registry",
             str(tmp_path / "reg"))
    assert r.returncode == 0, r.stderr
    assert "warning: batching will be off for this model" in r.stderr
    m = read_manifest(tmp_path / "reg/one/1/manifest.json")
    assert m.batching["batchable"] is False
    assert "fixed batch dimension 1 on input, output" in m.batching["reason"]
    assert m.inputs[0].shape == (1, 4)  # the file as given


def test_the_server_logs_why_batching_is_off(tmp_path: Path) -> None:
    (tmp_path / "one.onnx").write_bytes(_reshape_to_one_row())
    r = _cli("package", str(tmp_path / "one.onnx"), "--name", "one", "--registry",
             str(tmp_path / "reg"))
    assert r.returncode == 0, r.stderr
    with run_server(tmp_path / "reg", tmp_path) as s:
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                            "data": [1.0, 2.0, 3.0, 4.0]}]}
        assert httpx.post(f"{s.url}/v2/models/one/infer", json=body).status_code == 200
        log = s.log()
    assert "model one:1: batching is off: fixed batch dimension 1 on input, output" in log
