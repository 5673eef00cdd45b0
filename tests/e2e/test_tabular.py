"""Tabular models (one ONNX input per DataFrame column, string columns as BYTES) through a real
server: every request form a client of a DataFrame pipeline sends, checked against the
estimator's own predict/predict_proba on the same DataFrame."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest

from tests.conftest import RunningServer, run_server
from tests.e2e.tabular import fit_pipeline, frame, publish_tabular

pytestmark = pytest.mark.e2e

V2_TYPES = {"i": "INT64", "f": "FP32", "O": "BYTES"}


@pytest.fixture(scope="module")
def pipes() -> dict[str, Any]:
    return {"tab": fit_pipeline("logistic"), "tabgb": fit_pipeline("hgb")}


@pytest.fixture(scope="module")
def tab_registry(pipes: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tabular")
    # a small drift window so the drift test needs a few hundred requests, not thousands
    toml = "[monitoring]\nwindow_rows = 1000\n"
    publish_tabular(root, "tab", pipes["tab"], toml, with_reference=True)
    publish_tabular(root, "tabgb", pipes["tabgb"])
    return root


@pytest.fixture(scope="module")
def tab_server(tab_registry: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[RunningServer]:
    with run_server(tab_registry, tmp_path_factory.mktemp("tabserver")) as s:
        yield s


def v2_request(df: pd.DataFrame, flat: bool = False) -> dict[str, Any]:
    """One V2 tensor per column, shape [N, 1] (or [N] when `flat`)."""
    n = len(df)
    return {"inputs": [
        {"name": c, "datatype": V2_TYPES[df[c].dtype.kind],
         "shape": [n] if flat else [n, 1], "data": df[c].tolist()}
        for c in df.columns
    ]}


def check(pipe: Any, df: pd.DataFrame, labels: Any, proba: Any) -> None:
    want = pipe.predict_proba(df)
    np.testing.assert_allclose(np.asarray(proba, np.float64).reshape(want.shape), want,
                               atol=1e-4)
    sure = np.abs(want[:, 1] - 0.5) > 1e-3  # float32 vs float64 at the boundary may differ
    np.testing.assert_array_equal(np.asarray(labels)[sure], pipe.predict(df)[sure])


def outputs(doc: dict[str, Any]) -> dict[str, Any]:
    return {o["name"]: o["data"] for o in doc["outputs"]}


@pytest.mark.parametrize("model", ["tab", "tabgb"])
@pytest.mark.parametrize("flat", [False, True], ids=["n-by-1", "n"])
def test_v2_json_one_tensor_per_column(tab_server: RunningServer, pipes: dict[str, Any],
                                       model: str, flat: bool) -> None:
    df = frame(40, seed=3)
    r = httpx.post(f"{tab_server.url}/v2/models/{model}/infer",
                   content=orjson.dumps(v2_request(df, flat)))
    assert r.status_code == 200, r.text
    out = outputs(r.json())
    check(pipes[model], df, out["label"], out["probabilities"])


def test_v2_fp64_column_for_an_fp32_input(tab_server: RunningServer,
                                          pipes: dict[str, Any]) -> None:
    """A pandas float64 column sent as FP64 (what a DataFrame holds) for the model's FP32."""
    df = frame(10, seed=4)
    body = v2_request(df)
    body["inputs"][1]["datatype"] = "FP64"
    r = httpx.post(f"{tab_server.url}/v2/models/tab/infer", content=orjson.dumps(body))
    assert r.status_code == 200, r.text
    out = outputs(r.json())
    check(pipes["tab"], df, out["label"], out["probabilities"])


def test_tritonclient_binary_columns(tab_server: RunningServer, pipes: dict[str, Any]) -> None:
    import tritonclient.http as httpclient

    df = frame(25, seed=5)
    client = httpclient.InferenceServerClient(tab_server.url.removeprefix("http://"))
    inputs = []
    for i, c in enumerate(df.columns):
        arr = df[c].to_numpy()
        arr = arr.astype(object) if arr.dtype.kind == "O" else arr
        shape = [len(df), 1] if i % 2 else [len(df)]  # both shapes in one request
        t = httpclient.InferInput(c, shape, V2_TYPES[arr.dtype.kind])
        t.set_data_from_numpy(arr.reshape(shape), binary_data=True)
        inputs.append(t)
    result = client.infer("tab", inputs)
    check(pipes["tab"], df, result.as_numpy("label"), result.as_numpy("probabilities"))


@pytest.mark.parametrize("form", ["instances", "inputs"])
def test_v1_rows_and_columns_with_strings(tab_server: RunningServer, pipes: dict[str, Any],
                                          form: str) -> None:
    df = frame(12, seed=6)
    body: dict[str, Any] = (
        {"instances": df.to_dict(orient="records")} if form == "instances"
        else {"inputs": df.to_dict(orient="list")}
    )
    r = httpx.post(f"{tab_server.url}/v1/models/tab:predict", content=orjson.dumps(body))
    assert r.status_code == 200, r.text
    doc = r.json()
    if form == "instances":
        labels = [p["label"] for p in doc["predictions"]]
        proba = [p["probabilities"] for p in doc["predictions"]]
    else:
        labels, proba = doc["outputs"]["label"], doc["outputs"]["probabilities"]
    check(pipes["tab"], df, labels, proba)


def _columns(df: pd.DataFrame, n: int = 2) -> list[dict[str, Any]]:
    return v2_request(df[:n])["inputs"]  # type: ignore[no-any-return]


def _bad_requests() -> list[Any]:
    df = frame(3, seed=8)
    good = _columns(df)
    wrong_type = [dict(good[0], datatype="BYTES", data=["30", "60"]), *good[1:]]
    ragged = [dict(good[0], shape=[3, 1], data=df["age"].tolist()), *good[1:]]
    extra = [*good, {"name": "height", "datatype": "FP32", "shape": [2, 1], "data": [1, 2]}]
    v1_bad = {"inputs": {**df[:2].to_dict(orient="list"), "colour": ["red", 7]}}
    return [
        pytest.param("v2", {"inputs": good[1:]}, "missing input 'age'", id="missing"),
        pytest.param("v2", {"inputs": extra}, "unknown input 'height'", id="extra"),
        pytest.param("v2", {"inputs": wrong_type}, "column 'age': expected INT64, got BYTES",
                     id="wrong-type"),
        pytest.param("v2", {"inputs": ragged}, "ragged columns: 'age' has 3 rows but 'income' "
                     "has 2", id="ragged"),
        pytest.param("v1", {"instances": [{"age": 3, "income": 1.0, "colour": "red"}]},
                     "missing input 'city'", id="v1-missing"),
        pytest.param("v1", v1_bad, "column 'colour': expected BYTES (strings), got int",
                     id="v1-number-in-string-column"),
    ]


@pytest.mark.parametrize(("protocol", "body", "message"), _bad_requests())
def test_bad_columns_get_a_clear_400(tab_server: RunningServer, protocol: str,
                                     body: dict[str, Any], message: str) -> None:
    path = "/v2/models/tab/infer" if protocol == "v2" else "/v1/models/tab:predict"
    r = httpx.post(tab_server.url + path, content=orjson.dumps(body))
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def _concurrent(url: str, df: pd.DataFrame) -> list[dict[str, Any]]:
    async def one(c: httpx.AsyncClient, i: int) -> dict[str, Any]:
        body = v2_request(df[i : i + 1], flat=bool(i % 2))  # [1] and [1, 1] mixed in batches
        r = await c.post("/v2/models/tab/infer", content=orjson.dumps(body))
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def main() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=url, timeout=30,
                                     limits=httpx.Limits(max_connections=len(df))) as c:
            return list(await asyncio.gather(*(one(c, i) for i in range(len(df)))))

    return asyncio.run(main())


@pytest.mark.parametrize("impl", ["compiled", "purepython"])
def test_concurrent_rows_share_batches_and_get_their_own_answers(
    tab_registry: Path, tab_server: RunningServer, pipes: dict[str, Any], tmp_path: Path,
    impl: str,
) -> None:
    df = frame(64, seed=9)
    if impl == "compiled":
        docs = _concurrent(tab_server.url, df)
    else:
        with run_server(tab_registry, tmp_path, env={"SERVING_PUREPYTHON": "1"}) as s:
            docs = _concurrent(s.url, df)
    labels = [outputs(d)["label"][0] for d in docs]
    proba = [outputs(d)["probabilities"] for d in docs]
    check(pipes["tab"], df, labels, proba)
    assert max(d["parameters"]["batch_size"] for d in docs) > 1, "no two requests shared a batch"


def test_categorical_drift_and_quality_per_column(tab_registry: Path, tmp_path: Path) -> None:
    """A quarter of `colour` unseen, a tenth missing: the report and the metrics say so per
    column, and `city` (as in the reference) stays calm."""
    df = frame(1200, seed=10)
    rng = np.random.default_rng(11)
    pick = rng.random(len(df))
    df.loc[pick < 0.25, "colour"] = "purple"
    df.loc[(pick >= 0.25) & (pick < 0.35), "colour"] = ""
    with run_server(tab_registry, tmp_path) as s, httpx.Client(base_url=s.url) as c:
        for i in range(0, len(df), 8):
            r = c.post("/v2/models/tab/infer", content=orjson.dumps(v2_request(df[i : i + 8])))
            assert r.status_code == 200, r.text
        report = c.get("/v2/models/tab/drift").json()
        metrics = c.get("/metrics").text
    by_name = {f["name"]: f for f in report["features"]}
    colour, city = by_name["colour"], by_name["city"]
    assert colour["kind"] == "categorical"
    assert colour["unseen_share"] == pytest.approx(0.25, abs=0.04)
    assert colour["missing_share"] == pytest.approx(0.10, abs=0.03)
    assert colour["drifted"] and colour["psi"] > report["psi_threshold"]
    assert set(colour["shares"]) == {"blue", "green", "ochre", "red"}
    assert city["unseen_share"] == 0 and not city["drifted"]
    assert not by_name["age"]["drifted"]  # the numeric columns are profiled too
    assert report["features"][0]["name"] == "colour"  # worst first
    line = 'serving_feature_out_of_range_ratio{feature="colour",model="tab",version="1"}'
    assert line in metrics


# ---- MLServer's own pandas codec -------------------------------------------------------------

# MLServer pins fastapi below ours, so the codec runs in a venv of its own and hands over the
# request bytes it would send (what matters is what goes over the wire).
MLSERVER = "mlserver==1.7.1"
_ENCODE = """
import json, sys
import pandas as pd
from mlserver.codecs import PandasCodec
doc = json.load(sys.stdin)
df = pd.DataFrame({c: pd.Series(v, dtype=doc["dtypes"][c]) for c, v in doc["columns"].items()})
req = PandasCodec.encode_request(df, use_bytes=doc["use_bytes"])
# the two ways MLServer's docs send it: pydantic's JSON, and json= of the model_dump()
print(req.model_dump_json() if doc["use_bytes"] else json.dumps(req.model_dump()))
"""


@pytest.fixture(scope="session")
def mlserver_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A python with MLServer installed: SERVING_TEST_MLSERVER_PYTHON, or a fresh venv. Fails
    (never skips) when MLServer cannot be had: the codec is what this test is about."""
    import os
    import subprocess
    import sys

    given = os.environ.get("SERVING_TEST_MLSERVER_PYTHON")
    if given:
        return given
    venv = tmp_path_factory.mktemp("mlserver") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    done = subprocess.run([python, "-m", "pip", "install", "-q", MLSERVER],
                          capture_output=True, text=True, timeout=600)
    if done.returncode:
        pytest.fail(f"could not install {MLSERVER}: {done.stderr[-2000:]}")
    return python


def mlserver_encode(python: str, df: pd.DataFrame, use_bytes: bool) -> bytes:
    import subprocess

    doc = {
        "columns": df.to_dict(orient="list"),
        # object, not pandas 3's default string dtype, which MLServer 1.7.1 cannot encode
        "dtypes": {c: str(df[c].dtype) for c in df.columns},
        "use_bytes": use_bytes,
    }
    done = subprocess.run([python, "-c", _ENCODE], input=orjson.dumps(doc),
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


@pytest.mark.parametrize("use_bytes", [True, False], ids=["bytes", "str"])
def test_mlserver_pandas_codec_request(tab_server: RunningServer, pipes: dict[str, Any],
                                       mlserver_python: str, use_bytes: bool) -> None:
    df = frame(30, seed=12)
    df["income"] = df["income"].astype(np.float64)  # what a DataFrame usually holds
    body = mlserver_encode(mlserver_python, df, use_bytes)
    sent = orjson.loads(body)
    assert sent["parameters"]["content_type"] == "pd"
    assert {i["name"]: i.get("parameters", {}).get("content_type") for i in sent["inputs"]}[
        "colour"] == "str"
    r = httpx.post(f"{tab_server.url}/v2/models/tab/infer", content=body)
    assert r.status_code == 200, r.text
    out = outputs(r.json())
    check(pipes["tab"], df, out["label"], out["probabilities"])


def test_mlserver_pandas_codec_missing_numbers(tab_server: RunningServer,
                                               mlserver_python: str) -> None:
    """The codec sends a NaN as null: NaN for the model, which (without `[inputs]
    allow_nonfinite`) refuses it by name rather than with a parse error."""
    df = frame(4, seed=13)
    df["income"] = df["income"].astype(np.float64)
    df.loc[2, "income"] = np.nan
    body = mlserver_encode(mlserver_python, df, True)
    assert orjson.loads(body)["inputs"][1]["data"][2] is None
    r = httpx.post(f"{tab_server.url}/v2/models/tab/infer", content=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "input 'income' contains NaN or Infinity"
