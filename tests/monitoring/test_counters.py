"""The plain counters and Triton's statistics built from them, with plain objects (no server)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.errors import NotFound
from serving.lifecycle.manager import Model, ModelManager
from serving.lifecycle.states import ModelVersion
from serving.model_config import ModelConfig
from serving.monitoring.counters import BatchStats, CounterStore, Histogram
from serving.monitoring.statistics import model_statistics
from serving.routing.shadow import watch


def test_histogram_buckets_are_cumulative() -> None:
    h = Histogram((0.001, 0.01, 1.0))
    for x in (0.0005, 0.001, 0.005, 2.0):
        h.observe(x)
    assert h.family_buckets() == [("0.001", 2), ("0.01", 3), ("1", 3), ("+Inf", 4)]
    assert h.total == pytest.approx(2.0065)


def test_batch_stats_table_by_batch_size() -> None:
    st = BatchStats()
    st.executed(5, 0.002)
    st.executed(5, 0.001)
    st.executed(1, 0.0005)
    assert st.by_size == {5: [2, pytest.approx(0.003)], 1: [1, 0.0005]}
    assert st.run_time.family_buckets()[-1] == ("+Inf", 3)
    assert st.last_at > 0


def _manager(tmp_path: Path) -> tuple[ModelManager, Model, ModelVersion]:
    manager = ModelManager(str(tmp_path))
    model = manager.models["iris"] = Model("iris", ModelConfig())
    mv = ModelVersion("iris", 1, tmp_path / "iris" / "1", ModelConfig(),
                      stats=model.batch_stats.setdefault(1, BatchStats()))
    model.versions[1] = mv
    return manager, model, mv


def test_triton_statistics_count_per_request_and_per_batch_size(tmp_path: Path) -> None:
    manager, _model, mv = _manager(tmp_path)
    counters = CounterStore()
    # three successful requests (two routes), one failure
    counters.request_stats("iris", "1", "primary").add_success(0.010, 0.001, 0.002, 0.003, 0.0005)
    counters.request_stats("iris", "1", "primary").add_success(0.020, 0.001, 0.004, 0.003, 0.0005)
    counters.request_stats("iris", "1", "canary").add_success(0.030, 0.002, 0.001, 0.006, 0.001)
    counters.request_stats("iris", "1", "primary").add("client_error", 0.001)
    counters.request_stats("iris", "2", "primary").add_success(1.0, 1.0, 1.0, 1.0, 1.0)  # not v1
    mv.stats.executed(2, 0.003)  # the first two requests ran in one batch of 2 rows
    mv.stats.executed(3, 0.006)  # the third had 3 rows

    (stat,) = model_statistics(manager, counters, "iris", "1")["model_stats"]
    inf = stat["inference_stats"]
    for name in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert inf[name]["count"] == 3, name
    assert inf["success"]["ns"] == 60_000_000
    assert inf["queue"]["ns"] == 7_000_000
    assert inf["compute_input"]["ns"] == 4_000_000  # decoding
    assert inf["compute_infer"]["ns"] == 12_000_000  # each request adds its batch's run
    assert inf["compute_output"]["ns"] == 2_000_000  # encoding
    assert inf["fail"] == {"count": 1, "ns": 1_000_000}
    assert inf["cache_hit"] == inf["cache_miss"] == {"count": 0, "ns": 0}
    assert stat["execution_count"] == 2 and stat["inference_count"] == 5
    assert stat["batch_stats"] == [
        {"batch_size": 2, "compute_input": {"count": 1, "ns": 0},
         "compute_infer": {"count": 1, "ns": 3_000_000}, "compute_output": {"count": 1, "ns": 0}},
        {"batch_size": 3, "compute_input": {"count": 1, "ns": 0},
         "compute_infer": {"count": 1, "ns": 6_000_000}, "compute_output": {"count": 1, "ns": 0}},
    ]
    assert [s["name"] for s in model_statistics(manager, counters, None, None)["model_stats"]] \
        == ["iris"]
    with pytest.raises(NotFound):
        model_statistics(manager, counters, "iris", "7")


def test_a_new_version_object_reports_the_same_counters(tmp_path: Path) -> None:
    """A reload replaces the ModelVersion (and its Scheduler); the Model keeps the counters."""
    manager, model, mv = _manager(tmp_path)
    mv.stats.executed(4, 0.001)
    reloaded = ModelVersion("iris", 1, mv.path, ModelConfig(),
                            stats=model.batch_stats.setdefault(1, BatchStats()))
    model.versions[1] = reloaded
    reloaded.stats.executed(1, 0.001)
    (stat,) = model_statistics(manager, CounterStore(), "iris", None)["model_stats"]
    assert stat["execution_count"] == 2 and stat["inference_count"] == 5


def test_a_shadow_copy_counts_as_mirrored_when_it_comes_back() -> None:
    async def main() -> tuple[list[tuple[int, int, int]], Any]:
        loop = asyncio.get_running_loop()
        stats = CounterStore().shadow_stats("iris", "2")
        primary = ({"label": np.array([1, 2])}, 2, 0.001, 0.001)
        copies = [loop.create_future() for _ in range(3)]
        for f in copies:
            watch(stats, primary, f)
        seen = [(stats.mirrored, stats.compared, stats.errors)]  # all three in flight
        copies[0].set_result(({"label": np.array([1, 0])}, 2, 0.001, 0.001))
        copies[1].set_exception(RuntimeError("shadow failed"))
        await asyncio.sleep(0)  # done-callbacks run on the next loop turn
        seen.append((stats.mirrored, stats.compared, stats.errors))
        copies[2].cancel()
        await asyncio.sleep(0)
        seen.append((stats.mirrored, stats.compared, stats.errors))
        return seen, stats

    seen, stats = asyncio.run(main())
    assert seen == [(0, 0, 0), (2, 1, 1), (3, 1, 2)]
    assert (stats.label_rows, stats.disagreements) == (2, 1)
