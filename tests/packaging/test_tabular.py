"""DataFrame models through `serving package` and a real server: one input per column (numbers
and strings), scikit-learn pipelines and the boosting libraries, sample data as CSV / Parquet /
structured .npy, and predictions compared to the estimator's own on the same DataFrame."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest

from serving.registry.manifest import read_manifest
from tests.conftest import RunningServer, run_server

pytestmark = pytest.mark.e2e  # trains models, runs the CLI and a server in processes

ROWS = 200


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving", *args], capture_output=True,
                          text=True, timeout=180)


def _frame() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "age": rng.integers(18, 80, ROWS).astype(np.int64),
        "income": rng.normal(50, 10, ROWS).astype(np.float32),
        "colour": rng.choice(["rose", "blue", "green"], ROWS).astype(object),
        "size": rng.choice(["S", "M", "L"], ROWS).astype(object),
    })
    score = df["income"] + df["age"] / 10 + (df["colour"] == "rose") * 5
    return df, (score > 57).astype(np.int64).to_numpy(), score.to_numpy(np.float64)


def _scaled_pipeline(final: Any) -> Any:
    """Imputer + scaler on numbers, one-hot and ordinal on strings: the linear-model shape."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    pre = ColumnTransformer([
        ("num", Pipeline([("imp", SimpleImputer()), ("sc", StandardScaler())]), ["age", "income"]),
        ("oh", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
        ("ord", OrdinalEncoder(), ["size"]),
    ])
    return Pipeline([("pre", pre), ("model", final)])


def _tree_pipeline(final: Any) -> Any:
    """Numbers as they are, strings ordinal-encoded: the tree-model shape (no scaling)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    pre = ColumnTransformer([("num", "passthrough", ["age", "income"]),
                             ("cat", OrdinalEncoder(), ["colour", "size"])])
    return Pipeline([("pre", pre), ("model", final)])


def _models() -> dict[str, tuple[Any, str]]:
    """name -> (fitted estimator, target kind)."""
    from catboost import CatBoostClassifier
    from lightgbm import LGBMClassifier, LGBMRegressor
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression, Ridge
    from xgboost import XGBClassifier, XGBRegressor

    return {
        "sk-logreg": (_scaled_pipeline(LogisticRegression(max_iter=500)), "class"),
        "sk-ridge": (_scaled_pipeline(Ridge()), "value"),
        "sk-hgb": (_tree_pipeline(HistGradientBoostingClassifier(max_iter=10)), "class"),
        # native categorical features: set-membership branches (ai.onnx.ml TreeEnsemble)
        "sk-hgb-cat": (_tree_pipeline(HistGradientBoostingClassifier(
            max_iter=10, categorical_features=[2, 3])), "class"),
        "xgb-clf": (_tree_pipeline(XGBClassifier(n_estimators=8, max_depth=3)), "class"),
        "xgb-reg": (_tree_pipeline(XGBRegressor(n_estimators=8, max_depth=3)), "value"),
        "lgbm-clf": (_tree_pipeline(LGBMClassifier(n_estimators=8, verbose=-1)), "class"),
        "lgbm-reg": (_tree_pipeline(LGBMRegressor(n_estimators=8, verbose=-1)), "value"),
        "catboost": (_tree_pipeline(CatBoostClassifier(iterations=8, verbose=0,
                                                       allow_writing_files=False)), "class"),
    }


# how each model's sample data is given: every format is used by some model
FORMATS = {"sk-logreg": "csv", "sk-ridge": "npy", "sk-hgb": "parquet", "sk-hgb-cat": "parquet",
           "xgb-clf": "parquet",
           "xgb-reg": "npy", "lgbm-clf": "parquet", "lgbm-reg": "parquet", "catboost": "parquet"}


def _write_sample(df: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        df.to_parquet(path)
    else:  # a structured array: text columns as fixed-width unicode
        np.save(path, df.to_records(index=False, column_dtypes={"colour": "U8", "size": "U4"}))


class Packaged:
    def __init__(self, root: Path, df: pd.DataFrame) -> None:
        self.root = root
        self.registry = root / "reg"
        self.df = df
        self.estimators: dict[str, tuple[Any, str]] = {}
        self.outputs: dict[str, subprocess.CompletedProcess[str]] = {}


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Packaged:
    """Every model fit on the DataFrame, dumped with joblib and packaged with the real CLI."""
    root = tmp_path_factory.mktemp("tabular")
    df, y_class, y_value = _frame()
    out = Packaged(root, df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (est, kind) in _models().items():
            est.fit(df, y_class if kind == "class" else y_value)
            joblib.dump(est, root / f"{name}.joblib")
            sample = root / f"{name}.{FORMATS[name]}"
            _write_sample(df, sample)
            out.estimators[name] = (est, kind)
            out.outputs[name] = _cli("package", str(root / f"{name}.joblib"), "--name", name,
                                     "--registry", str(out.registry), "--sample-data",
                                     str(sample))
    out.outputs["labels"] = _cli("package", str(root / "sk-logreg.joblib"), "--name",
                                 "sk-labels", "--registry", str(out.registry), "--labels",
                                 "no,yes")
    return out


@pytest.fixture(scope="module")
def tab_server(packaged: Packaged, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[RunningServer]:
    with run_server(packaged.registry, tmp_path_factory.mktemp("server")) as s:
        yield s


def _v2_columns(df: pd.DataFrame, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """Plain V2 JSON: one [N, 1] tensor per column, in the datatype the manifest says."""
    tensors = []
    for spec in inputs:
        col = df[spec["name"]]
        data = ([str(v) for v in col] if spec["datatype"] == "BYTES"
                else np.asarray(col, {"FP32": np.float32, "FP64": np.float64,
                                      "INT64": np.int64}[spec["datatype"]]).tolist())
        tensors.append({"name": spec["name"], "datatype": spec["datatype"],
                        "shape": [len(df), 1], "data": data})
    return {"inputs": tensors}


@pytest.mark.parametrize("name", list(FORMATS))
def test_dataframe_model_serves_the_estimators_predictions(
    packaged: Packaged, tab_server: RunningServer, name: str
) -> None:
    r = packaged.outputs[name]
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"published {name} version 1" in r.stdout
    m = read_manifest(packaged.registry / name / "1" / "manifest.json")
    assert [t.name for t in m.inputs] == ["age", "income", "colour", "size"]
    types = {t.name: t.datatype for t in m.inputs}
    assert types["colour"] == types["size"] == "BYTES" and types["income"] == "FP32"
    assert all(t.shape == (-1, 1) for t in m.inputs)
    assert m.parity["passed"] and m.parity["rows"] == ROWS
    assert set(m.samples) == set(types) and m.samples["colour"][0] == [packaged.df["colour"][0]]
    cats = {c["name"]: c for c in m.reference["categorical"]}
    assert sorted(cats["colour"]["categories"]) == ["blue", "green", "rose"]
    assert abs(sum(cats["colour"]["shares"]) - 1.0) < 1e-9
    assert {f["name"] for f in m.reference["features"]} == {"age", "income"}

    est, kind = packaged.estimators[name]
    df = packaged.df.iloc[:40]
    body = _v2_columns(df, [t.to_json() for t in m.inputs])
    resp = httpx.post(f"{tab_server.url}/v2/models/{name}/infer", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    outs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in resp.json()["outputs"]}
    if kind == "class":
        np.testing.assert_array_equal(outs["label"].ravel(), est.predict(df))
        np.testing.assert_allclose(outs["probabilities"], est.predict_proba(df), atol=1e-5)
    else:
        got = next(iter(outs.values())).ravel()
        np.testing.assert_allclose(got, est.predict(df), rtol=1e-5, atol=1e-4)


def test_classification_extension_names_the_classes(packaged: Packaged,
                                                    tab_server: RunningServer) -> None:
    """`classes_` of the last step name the integer classes unless --labels is given."""
    m = read_manifest(packaged.registry / "sk-logreg" / "1" / "manifest.json")
    assert m.labels == ("0", "1") and m.task == "classification"
    r = packaged.outputs["labels"]
    assert r.returncode == 0, r.stderr
    assert read_manifest(packaged.registry / "sk-labels" / "1" / "manifest.json").labels == (
        "no", "yes")
    body = _v2_columns(packaged.df.iloc[:1], [t.to_json() for t in m.inputs])
    body["outputs"] = [{"name": "probabilities", "parameters": {"classification": 1}}]
    est = packaged.estimators["sk-logreg"][0]
    want = ["no", "yes"][int(est.predict(packaged.df.iloc[:1])[0])]
    resp = httpx.post(f"{tab_server.url}/v2/models/sk-labels/infer", json=body,
                      timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["outputs"][0]["data"][0].endswith(f":{want}")
    r = _cli("package", str(packaged.root / "sk-logreg.joblib"), "--name", "bad-labels",
             "--registry", str(packaged.root / "other"), "--labels", "a,b,c")
    assert r.returncode == 1
    assert "--labels names 3 classes but the model scores 2" in r.stderr


def test_generated_rows_per_column_when_no_sample_data(packaged: Packaged,
                                                       tmp_path: Path) -> None:
    r = _cli("package", str(packaged.root / "sk-logreg.joblib"), "--name", "gen",
             "--registry", str(tmp_path / "reg"))
    assert r.returncode == 0, r.stderr
    assert "no --sample-data: 256 rows generated per column" in r.stdout
    assert "parity on 256 rows (generated)" in r.stdout
    m = read_manifest(tmp_path / "reg/gen/1/manifest.json")
    cats = {c["name"]: c["categories"] for c in m.reference["categorical"]}
    assert sorted(cats["colour"]) == ["blue", "green", "rose"]  # the encoder's categories


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_native_categorical_hgb_answers_as_sklearn_on_unknown_and_missing_values(
    kind: str,
) -> None:
    """Unknown categories, negative codes and NaN go where scikit-learn sends missing values."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    from serving.packaging.frame import feeds
    from serving.packaging.parity import check_parity_feeds
    from serving.packaging.tabular import build_from_frame

    df, y, value = _frame()
    pre = ColumnTransformer([
        ("num", "passthrough", ["age", "income"]),
        ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
         ["colour", "size"])])
    final = (HistGradientBoostingClassifier(max_iter=10, categorical_features=[2, 3])
             if kind == "classifier" else
             HistGradientBoostingRegressor(max_iter=10, categorical_features=[2, 3]))
    est = Pipeline([("pre", pre), ("model", final)]).fit(df, y if kind == "classifier" else value)
    manifest, onnx_bytes = build_from_frame("hgb", est, df)
    assert manifest.parity["passed"], manifest.parity
    odd = df.iloc[:60].copy()
    odd.loc[odd.index[:20], "colour"] = "purple"
    odd.loc[odd.index[20:40], "income"] = np.nan
    odd.loc[odd.index[40:50], "size"] = "XL"
    columns = [(t.name, t.datatype) for t in manifest.inputs]
    report = check_parity_feeds(est, onnx_bytes, feeds(odd, columns), odd)
    assert report["passed"], report


def test_hgb_with_text_categories_is_refused_with_the_way_out(tmp_path: Path) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    df, y, _ = _frame()
    est = HistGradientBoostingClassifier(max_iter=5, categorical_features=["colour", "size"])
    est.fit(df, y)
    joblib.dump(est, tmp_path / "hgb.joblib")
    r = _cli("package", str(tmp_path / "hgb.joblib"), "--name", "hgb", "--registry",
             str(tmp_path / "reg"))
    assert r.returncode == 1
    err = r.stderr.strip()
    assert err.count("\n") == 0, err  # one sentence
    assert ("step 'model' is a HistGradientBoostingClassifier whose native categorical "
            "features are text") in err
    assert "encode those columns in the pipeline" in err
    assert not (tmp_path / "reg").exists()


def test_unsupported_step_names_step_type_and_way_out(tmp_path: Path) -> None:
    from sklearn.kernel_ridge import KernelRidge

    df, _, y = _frame()
    est = _scaled_pipeline(KernelRidge()).fit(df, y)
    joblib.dump(est, tmp_path / "kr.joblib")
    r = _cli("package", str(tmp_path / "kr.joblib"), "--name", "kr", "--registry",
             str(tmp_path / "reg"))
    assert r.returncode == 1
    assert ("step 'model' is a sklearn.kernel_ridge.KernelRidge, which has no "
            "ONNX converter here") in r.stderr
    assert "package the .onnx file" in r.stderr and "--expected-outputs" in r.stderr
    assert not (tmp_path / "reg").exists()


def test_pickled_npy_is_refused_and_missing_columns_named(packaged: Packaged,
                                                          tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", packaged.df.to_numpy(), allow_pickle=True)
    r = _cli("package", str(packaged.root / "sk-logreg.joblib"), "--name", "x", "--registry",
             str(tmp_path / "reg"), "--sample-data", str(tmp_path / "obj.npy"))
    assert r.returncode == 1
    assert "obj.npy holds an object array" in r.stderr and "structured array" in r.stderr
    packaged.df.drop(columns=["size"]).to_csv(tmp_path / "short.csv", index=False)
    r = _cli("package", str(packaged.root / "sk-logreg.joblib"), "--name", "x", "--registry",
             str(tmp_path / "reg"), "--sample-data", str(tmp_path / "short.csv"))
    assert r.returncode == 1 and "lacks the model's column(s) 'size'" in r.stderr
    assert not (tmp_path / "reg").exists()


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm", "catboost", "scaler-pipeline"])
def test_estimator_without_column_transformer_gets_one_input_per_column(kind: str) -> None:
    """Converters other than ColumnTransformer's take one input: a bare estimator (or a Pipeline
    that starts with a scaler) fit on a DataFrame is converted behind a pass-through Concat."""
    from catboost import CatBoostRegressor
    from lightgbm import LGBMRegressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBClassifier

    from serving.packaging.tabular import build_from_frame

    df, y, value = _frame()
    num = df[["age", "income"]]
    est = {"xgboost": lambda: XGBClassifier(n_estimators=5, max_depth=3).fit(num, y),
           "lightgbm": lambda: LGBMRegressor(n_estimators=5, verbose=-1).fit(num, value),
           "catboost": lambda: CatBoostRegressor(iterations=5, verbose=0,
                                                 allow_writing_files=False).fit(num, value),
           "scaler-pipeline": lambda: make_pipeline(StandardScaler(),
                                                    LogisticRegression()).fit(num, y)}[kind]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest, _ = build_from_frame("m", est, num)
    assert [t.name for t in manifest.inputs] == ["age", "income"]
    assert manifest.parity["passed"], manifest.parity
