"""The drift monitor on plain arrays: distances against the reference, the window, the data
quality counts, and "not enough data" below the minimum number of rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from serving.model_config import MonitoringConfig
from serving.monitoring.drift import CHUNK, DriftMonitor, psi
from serving.packaging.profile import profile_reference


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, dict[str, Any]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2_000, 3))
    labels = (x[:, 0] > 0).astype(np.int64)
    return x, profile_reference(x, {"label": labels}, ["a", "b", "c"])


def monitor(ref: dict[str, Any], **kw: Any) -> DriftMonitor:
    return DriftMonitor(ref, "2026-01-01T00:00:00+00:00", max_rows_per_batch=64, **kw)


def feed(m: DriftMonitor, x: np.ndarray, batch: int = 64) -> None:
    for i in range(0, len(x), batch):
        rows = x[i : i + batch].astype(np.float32)
        m.observe({"input": rows}, {"label": (rows[:, 0] > 0).astype(np.int64)})


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in report["features"]}


def test_a_handful_of_rows_is_not_enough_data(reference: tuple[np.ndarray, Any]) -> None:
    x, ref = reference
    m = monitor(ref, window_rows=10_000, min_rows=200)
    rows = x[:8].copy()  # 8 rows of reference traffic: their PSI alone is 2-6 (noise)
    rows[0, 0] += 10.0
    feed(m, rows)
    r = m.report()
    assert r["status"] == "not enough data" and r["window_rows"] == 8 and r["min_rows"] == 200
    assert not any(f["drifted"] for f in r["features"])
    assert all(f["psi"] == 0.0 and f["ks"] == 0.0 for f in r["features"])
    assert not r["outputs"]["label"]["drifted"] and r["outputs"]["label"]["psi"] == 0.0
    assert by_name(r)["a"]["out_of_range_share"] > 0  # data quality is still counted


def test_enough_rows_of_reference_traffic_stay_under_the_threshold(
    reference: tuple[np.ndarray, Any],
) -> None:
    x, ref = reference
    m = monitor(ref, window_rows=10_000, min_rows=200)
    feed(m, x[:1_000])
    r = m.report()
    assert r["status"] == "ok" and r["window_rows"] == 1_000
    assert all(f["psi"] < r["psi_threshold"] and not f["drifted"] for f in r["features"])


def test_a_shifted_feature_is_drifted_and_listed_first(reference: tuple[np.ndarray, Any]) -> None:
    x, ref = reference
    m = monitor(ref, window_rows=10_000, min_rows=200)
    shifted = x[:1_000].copy()
    shifted[:, 1] += 2.0
    feed(m, shifted)
    r = m.report()
    assert r["features"][0]["name"] == "b" and r["features"][0]["drifted"]
    assert not by_name(r)["a"]["drifted"] and not by_name(r)["c"]["drifted"]


def test_min_rows_never_exceeds_the_window(reference: tuple[np.ndarray, Any]) -> None:
    _, ref = reference
    assert monitor(ref, window_rows=100, min_rows=1_000).min_rows == 100


def test_the_window_keeps_the_last_one_to_two_halves(reference: tuple[np.ndarray, Any]) -> None:
    x, ref = reference
    m = monitor(ref, window_rows=CHUNK, min_rows=1)
    feed(m, np.concatenate([x, x]))  # 4,000 rows through a 1,024-row half
    assert CHUNK <= m.report()["window_rows"] <= 2 * CHUNK


def test_nan_rows_are_counted(reference: tuple[np.ndarray, Any]) -> None:
    x, ref = reference
    m = monitor(ref, window_rows=10_000, min_rows=1)
    rows = x[:100].copy()
    rows[:10, 2] = np.nan
    feed(m, rows)
    assert by_name(m.report())["c"]["nan_share"] == pytest.approx(0.1)


def test_psi_of_identical_shares_is_zero() -> None:
    shares = np.array([0.25, 0.25, 0.5])
    assert psi(shares, shares) == 0.0
    assert psi(shares, np.array([0.5, 0.25, 0.25])) > 0


def test_config_default_and_validation() -> None:
    assert MonitoringConfig().min_rows == 1_000
    with pytest.raises(ValueError, match="min_rows"):
        MonitoringConfig(min_rows=0)
