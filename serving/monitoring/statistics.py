"""Triton's statistics extension (`GET /v2/models[/NAME[/versions/V]]/stats`), field by field.

Per request, for successful requests (one success adds to every one of these counts in the same
step, so they are equal in any reading, as perf_analyzer requires):
- success: requests answered, and their time in the server (read to response sent);
- queue: their time in the batcher's queue;
- compute_input: decoding the request into the arrays the model takes (our backend's input
  preparation), compute_infer: their batch's ONNX Runtime run (each request adds its batch's
  time, as in Triton), compute_output: encoding the response.
fail: requests that failed, with their time.

Per execution (one successful batch adds to them in one step): execution_count (batches),
inference_count (their rows), and batch_stats, one entry per batch size in rows whose count is
the number of executions of that size and whose compute_infer time is theirs. Decoding and
encoding happen per request outside the batch, so a batch size's compute_input and
compute_output count its executions with no time of their own. There is no response cache:
cache_hit and cache_miss stay zero.
"""

from __future__ import annotations

from typing import Any

from serving.errors import NotFound
from serving.lifecycle.manager import Model, ModelManager
from serving.lifecycle.states import ModelVersion
from serving.monitoring.counters import BatchStats, CounterStore

_ZERO = {"count": 0, "ns": 0}


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _duration(count: float, seconds: float) -> dict[str, int]:
    return {"count": int(count), "ns": _ns(seconds)}


def model_statistics(
    manager: ModelManager, counters: CounterStore, model: str | None, version: str | None
) -> dict[str, Any]:
    """The statistics response for every loaded version of one model, or of all models."""
    out: list[dict[str, Any]] = []
    models = [manager.get_model(model)] if model else list(manager.models.values())
    for m in models:
        versions = list(m.versions.values())
        if version:
            versions = [v for v in versions if v.version_str == version]
            if not versions:
                raise NotFound(f"model {m.name!r} has no loaded version {version}")
        out.extend(version_statistics(m, mv, counters) for mv in versions)
    return {"model_stats": out}


def version_statistics(m: Model, mv: ModelVersion, counters: CounterStore) -> dict[str, Any]:
    """One version's $model_stat object."""
    ok = fail = 0
    ok_s = fail_s = queue_s = decode_s = run_s = encode_s = 0.0
    for (name, ver, _route), rs in list(counters.requests.items()):
        if name == mv.name and ver == mv.version_str:
            n_ok = rs.outcomes.get("success", 0)
            ok += n_ok
            fail += sum(rs.outcomes.values()) - n_ok
            ok_s += rs.success_seconds
            fail_s += rs.fail_seconds
            queue_s += rs.queue_seconds
            decode_s += rs.decode.total
            run_s += rs.run_seconds
            encode_s += rs.encode.total
    st = m.batch_stats.get(mv.version) or BatchStats()
    sizes = sorted(st.by_size.items())
    return {
        "name": mv.name,
        "version": mv.version_str,
        "last_inference": int(st.last_at * 1000),
        "inference_count": sum(int(size * n) for size, (n, _s) in sizes),
        "execution_count": sum(int(n) for _size, (n, _s) in sizes),
        "inference_stats": {
            "success": _duration(ok, ok_s),
            "fail": _duration(fail, fail_s),
            "queue": _duration(ok, queue_s),
            "compute_input": _duration(ok, decode_s),
            "compute_infer": _duration(ok, run_s),
            "compute_output": _duration(ok, encode_s),
            "cache_hit": dict(_ZERO),
            "cache_miss": dict(_ZERO),
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": _duration(n, 0.0),
                "compute_infer": _duration(n, seconds),
                "compute_output": _duration(n, 0.0),
            }
            for size, (n, seconds) in sizes
        ],
    }
