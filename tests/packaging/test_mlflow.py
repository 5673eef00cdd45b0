"""MLflow models into the registry: logged with the real mlflow library into a local SQLite
tracking store, packaged by `runs:/`, `models:/` URI or directory with the real CLI, served by a
real server and compared to the estimator's own predictions on the same DataFrame."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from serving.registry.manifest import read_manifest
from tests.conftest import RunningServer, run_server

pytestmark = pytest.mark.e2e  # logs models, runs the CLI and a server in processes


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving", *args], capture_output=True,
                          text=True, timeout=300)


def _frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"x": rng.normal(size=150).astype(np.float32),
                       "z": rng.normal(size=150).astype(np.float32),
                       "colour": rng.choice(["rose", "blue"], 150).astype(object)})
    return df, ((df["x"] + (df["colour"] == "rose")) > 0.5).astype(np.int64).to_numpy()


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.registry = root / "reg"
        self.df, self.y = _frame()
        self.models: dict[str, Any] = {}
        self.results: dict[str, subprocess.CompletedProcess[str]] = {}
        self.run_ids: dict[str, str] = {}


def _log(store: Store) -> dict[str, str]:
    """Log an sklearn pipeline (registered), an XGBoost and a LightGBM model in runs, and save
    an ONNX-flavoured model to a directory; return each one's source for `serving package`."""
    import lightgbm
    import mlflow
    import xgboost
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    df, y = store.df, store.y
    num = df[["x", "z"]]
    mlflow.set_tracking_uri(store.uri)
    exp = mlflow.create_experiment("tab", artifact_location=(store.root / "art").as_uri())
    pipe = Pipeline([("pre", ColumnTransformer([("n", StandardScaler(), ["x", "z"]),
                                                 ("c", OneHotEncoder(), ["colour"])])),
                     ("m", LogisticRegression())]).fit(df, y)
    xgb = xgboost.XGBClassifier(n_estimators=5, max_depth=3).fit(num, y)
    lgbm = lightgbm.LGBMRegressor(n_estimators=5, verbose=-1).fit(num, df["x"] * 2)
    store.models = {"ml-sklearn": (pipe, df), "ml-xgb": (xgb, num), "ml-lgbm": (lgbm, num)}
    sources = {}
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.sklearn.log_model(pipe, name="model", input_example=df.head(20),
                                 signature=infer_signature(df, pipe.predict(df)),
                                 registered_model_name="tab")
        store.run_ids["ml-sklearn"] = run.info.run_id
    sources["ml-sklearn"] = "models:/tab/1"
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.xgboost.log_model(xgb, name="xgb", input_example=num.head(20),
                                 signature=infer_signature(num, xgb.predict(num)))
        store.run_ids["ml-xgb"] = run.info.run_id
    sources["ml-xgb"] = f"runs:/{store.run_ids['ml-xgb']}/xgb"
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.lightgbm.log_model(lgbm, name="lgbm", input_example=num.head(20),
                                  signature=infer_signature(num, lgbm.predict(num)))
        store.run_ids["ml-lgbm"] = run.info.run_id
    sources["ml-lgbm"] = f"runs:/{store.run_ids['ml-lgbm']}/lgbm"
    return sources


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    pytest.importorskip("mlflow")
    out = Store(tmp_path_factory.mktemp("mlflow"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mlflow's advice on environments and signatures
        sources = _log(out)
    for name, src in sources.items():
        out.results[name] = _cli("package", src, "--name", name, "--registry",
                                 str(out.registry), "--tracking-uri", out.uri)
    return out


@pytest.fixture(scope="module")
def ml_server(store: Store, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[RunningServer]:
    with run_server(store.registry, tmp_path_factory.mktemp("server")) as s:
        yield s


@pytest.mark.parametrize("name", ["ml-sklearn", "ml-xgb", "ml-lgbm"])
def test_mlflow_model_is_packaged_with_provenance_and_served(
    store: Store, ml_server: RunningServer, name: str
) -> None:
    import mlflow

    r = store.results[name]
    assert r.returncode == 0, r.stdout + r.stderr
    assert "parity on 20 rows (MLflow input example)" in r.stdout, r.stdout
    m = read_manifest(store.registry / name / "1" / "manifest.json")
    prov = m.source["mlflow"]
    assert prov["run_id"] == store.run_ids[name]
    assert prov["model_uri"].startswith("models:/tab/1" if name == "ml-sklearn" else "runs:/")
    assert prov["mlflow_version"] == mlflow.__version__
    est, frame = store.models[name]
    assert [t.name for t in m.inputs] == list(frame.columns)
    rows = frame.iloc[:25]
    inputs = [{"name": t.name, "datatype": t.datatype, "shape": [len(rows), 1],
               "data": [str(v) for v in rows[t.name]] if t.datatype == "BYTES"
               else rows[t.name].tolist()} for t in m.inputs]
    resp = httpx.post(f"{ml_server.url}/v2/models/{name}/infer", json={"inputs": inputs},
                      timeout=30)
    assert resp.status_code == 200, resp.text
    outs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in resp.json()["outputs"]}
    if "probabilities" in outs:
        np.testing.assert_array_equal(outs["label"].ravel(), est.predict(rows))
        np.testing.assert_allclose(outs["probabilities"], est.predict_proba(rows), atol=1e-5)
    else:
        got = next(iter(outs.values())).ravel()
        np.testing.assert_allclose(got, est.predict(rows), rtol=1e-5, atol=1e-4)


def test_onnx_flavour_directory_and_unknown_flavour(store: Store, tmp_path: Path) -> None:
    import mlflow
    import onnx

    from tests.e2e.models import identity_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.onnx.save_model(onnx.load_from_string(identity_model(["FP32"])),
                               str(tmp_path / "onnx_model"))
    r = _cli("package", str(tmp_path / "onnx_model"), "--name", "ident", "--registry",
             str(tmp_path / "reg"))
    assert r.returncode == 0, r.stderr
    m = read_manifest(tmp_path / "reg/ident/1/manifest.json")
    assert m.source["mlflow"]["flavor"] == "onnx" and m.inputs[0].name == "x_FP32"
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: x\n")
    r = _cli("package", str(tmp_path / "odd"), "--name", "odd", "--registry",
             str(tmp_path / "reg"))
    assert r.returncode == 1
    assert "has the flavour(s) python_function; serving package takes onnx, sklearn" in r.stderr
    r = _cli("package", "runs:/0123456789abcdef/model", "--name", "gone", "--registry",
             str(tmp_path / "reg"), "--tracking-uri", store.uri)
    assert r.returncode == 1 and "cannot fetch runs:/0123456789abcdef/model" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
