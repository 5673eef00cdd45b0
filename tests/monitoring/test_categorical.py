"""Categorical (string) columns in the drift monitor: shares, unseen and missing values."""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.monitoring.drift import DriftMonitor

REFERENCE: dict[str, Any] = {
    "rows": 100,
    "input": "",
    "features": [{"name": "age", "min": 0.0, "max": 100.0, "nan_share": 0.0,
                  "edges": [50.0], "shares": [0.5, 0.5]}],
    "outputs": {},
    "categorical": [{"name": "colour", "input": "colour", "categories": ["blue", "red"],
                     "shares": [0.5, 0.5], "other_share": 0.0, "missing_share": 0.0}],
}


def _feeds(colours: list[str]) -> dict[str, np.ndarray]:
    n = len(colours)
    return {"age": np.linspace(0, 100, n).reshape(n, 1),
            "colour": np.array(colours, dtype=object).reshape(n, 1)}


def _report(mon: DriftMonitor) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in mon.report()["features"]}


def test_reference_mix_is_calm() -> None:
    mon = DriftMonitor(REFERENCE, "2024-01-01T00:00:00+00:00", max_rows_per_batch=100)
    for _ in range(10):
        mon.observe(_feeds(["red", "blue"] * 4), {})
    f = _report(mon)
    assert f["colour"]["psi"] < 0.01 and not f["colour"]["drifted"]
    assert f["colour"]["shares"] == {"blue": 0.5, "red": 0.5}
    assert not f["age"]["drifted"]  # numeric columns, one input each, are profiled too
    assert mon.report()["window_rows"] == 80


def test_unseen_and_missing_values_are_counted_apart() -> None:
    mon = DriftMonitor(REFERENCE, "2024-01-01T00:00:00+00:00", max_rows_per_batch=100,
                      min_rows=1)
    mon.observe(_feeds(["red", "purple", "", "blue", "red", "purple", "nan", "red"]), {})
    c = _report(mon)["colour"]
    assert c["unseen_share"] == c["out_of_range_share"] == 0.25
    assert c["missing_share"] == c["nan_share"] == 0.25
    assert c["drifted"] and c["psi"] > 0.2


def test_only_categorical_columns() -> None:
    ref = dict(REFERENCE, features=[])
    mon = DriftMonitor(ref, "2024-01-01T00:00:00+00:00", window_rows=4, max_rows_per_batch=100)
    for _ in range(3):
        mon.observe({"colour": np.array(["red", "red", "red"], dtype=object)}, {})
    report = mon.report()
    assert report["features"][0]["shares"] == {"blue": 0.0, "red": 1.0}
    assert report["window_rows"] == 9


def test_reject_out_of_range_names_the_column_of_a_tabular_model() -> None:
    import pytest

    from serving.errors import BadRequest

    mon = DriftMonitor(REFERENCE, "2024-01-01T00:00:00+00:00")
    mon.enforce(_feeds(["red", "blue"]))  # in range: nothing to say
    feeds = _feeds(["red", "blue"])
    feeds["age"] = np.array([[30.0], [150.0]])
    with pytest.raises(BadRequest, match=r"column 'age' = 150 \(row 1\) is outside the "
                                         r"training range \[0, 100\]"):
        mon.enforce(feeds)
