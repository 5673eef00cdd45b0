"""Unit tests of the tabular pieces: sample tables typed per column, the per-column reference
profile (its categorical section is what drift reads), rows generated from a fitted pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.packaging.frame import (
    FrameError,
    column_hints,
    column_types,
    feeds,
    generated_frame,
    read_frame,
)
from serving.packaging.profile import MAX_CATEGORIES, profile_columns


def _df() -> pd.DataFrame:
    return pd.DataFrame({"age": np.array([30, 41, 52], np.int64),
                         "income": np.array([1.5, 2.5, np.nan], np.float64),
                         "colour": ["rose", "blue", None]})


def test_csv_columns_keep_their_types_and_model_order(tmp_path: Path) -> None:
    _df()[["colour", "income", "age"]].to_csv(tmp_path / "x.csv", index=False)
    df = read_frame(tmp_path / "x.csv", ["age", "income", "colour"])
    assert list(df.columns) == ["age", "income", "colour"]
    assert df["age"].dtype.kind == "i" and df["income"].dtype.kind == "f"
    assert column_types(df, None)[0] == [("age", "INT64"), ("income", "FP64"),
                                         ("colour", "BYTES")]
    assert column_types(df, "FP32")[-1] == [("age", "FP32"), ("income", "FP32"),
                                            ("colour", "BYTES")]


def test_structured_npy_and_parquet_read_as_the_frame(tmp_path: Path) -> None:
    src = _df().fillna({"colour": "", "income": 0.0})
    np.save(tmp_path / "x.npy", src.to_records(index=False, column_dtypes={"colour": "U8"}))
    src.to_parquet(tmp_path / "x.parquet")
    for name in ("x.npy", "x.parquet"):
        df = read_frame(tmp_path / name, ["age", "income", "colour"])
        assert df["colour"].tolist() == ["rose", "blue", ""], name
        assert df["age"].tolist() == [30, 41, 52], name


def test_object_npy_is_refused_without_running_pickle(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", _df().to_numpy(), allow_pickle=True)
    with pytest.raises(FrameError, match=r"object array.*structured array"):
        read_frame(tmp_path / "x.npy", ["age", "income", "colour"])


def test_feeds_are_columns_of_one_value_and_missing_text_is_empty() -> None:
    fed = feeds(_df(), [("age", "INT64"), ("income", "FP32"), ("colour", "BYTES")])
    assert fed["age"].shape == (3, 1) and fed["age"].dtype == np.int64
    assert fed["income"].dtype == np.float32
    assert fed["colour"].ravel().tolist() == ["rose", "blue", ""]


def test_profile_has_a_categorical_section_beside_the_numeric_one() -> None:
    colour = np.array(["rose"] * 6 + ["blue"] * 3 + [""], dtype=object).reshape(-1, 1)
    fed = {"x": np.arange(10, dtype=np.float32).reshape(-1, 1), "colour": colour}
    prof = profile_columns(fed, {"label": np.zeros(10, np.int64)})
    assert prof["layout"] == "columns" and prof["input"] == "" and prof["rows"] == 10
    (num,) = prof["features"]
    assert num["name"] == num["input"] == "x" and num["min"] == 0 and num["max"] == 9
    assert set(num) >= {"edges", "shares", "nan_share"}
    (cat,) = prof["categorical"]
    assert cat == {"name": "colour", "input": "colour", "categories": ["blue", "rose"],
                   "shares": [0.3, 0.6], "other_share": 0.0, "missing_share": 0.1}
    assert prof["outputs"]["label"]["kind"] == "classes"


def test_profile_keeps_the_most_frequent_categories() -> None:
    values = [f"c{i}" for i in range(MAX_CATEGORIES + 10)] + ["c0"] * 5
    cat = profile_columns({"c": np.array(values, object).reshape(-1, 1)}, {})["categorical"][0]
    assert len(cat["categories"]) == MAX_CATEGORIES and "c0" in cat["categories"]
    assert cat["other_share"] == pytest.approx(10 / len(values))


def test_generated_rows_follow_the_pipelines_encoders_and_scalers() -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder

    df = pd.DataFrame({"a": [0.0, 10.0, 5.0, 7.0], "b": ["x", "y", "x", "z"]})
    pre = ColumnTransformer([
        ("num", Pipeline([("imp", SimpleImputer()), ("mm", MinMaxScaler())]), ["a"]),
        ("cat", OneHotEncoder(), ["b"])])
    est = Pipeline([("pre", pre), ("clf", LogisticRegression())]).fit(df, [0, 1, 0, 1])
    hints = column_hints(est, ["a", "b"])
    assert hints["a"] == ("uniform", (0.0, 10.0))
    assert hints["b"][0] == "choice" and sorted(hints["b"][1]) == ["x", "y", "z"]
    gen, how = generated_frame(est, ["a", "b"], rows=50)
    assert gen["a"].between(0, 10).all() and set(gen["b"]) <= {"x", "y", "z"}
    assert "2 of 2 columns" in how
