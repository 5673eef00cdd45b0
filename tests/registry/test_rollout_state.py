"""The rollout document: typed, and read and written in the format the registry already holds."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from serving.registry.rollout_state import Rollout, RolloutState, RolloutSummary, StepKind
from serving.registry.routing_state import RoutingState, read_routing, state_path, write_routing

# A routing state as the earlier (dict-based) controller wrote it, mid-rollout.
WRITTEN = {
    "primary": 1, "canary": 2, "canary_weight": 25.0, "shadows": [],
    "rollout": {
        "id": "iris-2-1767225600", "candidate": 2, "baseline": 1,
        "steps": [
            {"kind": "shadow", "weight": 0.0, "duration_s": 60.0, "min_requests": 40},
            {"kind": "canary", "weight": 25.0, "duration_s": 60.0, "min_requests": 40},
        ],
        "thresholds": {"min_requests": 200, "max_error_rate_increase": 0.01,
                       "significance": 0.05, "max_p99_ratio": 1.5,
                       "min_latency_increase_ms": 1.0, "max_disagreement": 0.05,
                       "max_shadow_error_rate": 0.01},
        "bake_s": 30.0, "state": "running", "step": 1, "step_started_at": 1767225660.5,
        "started_at": "2026-01-01T00:00:00.000+00:00", "started_by": "user",
        "history": [{"at": "2026-01-01T00:01:00.500+00:00", "step": 0, "kind": "shadow",
                     "weight": 0.0, "decision": "pass", "reason": "within thresholds",
                     "measured": {"mirrored": 400, "primary_p99_ms": None}, "by": "controller"}],
        "last_decision": "pass", "updated_at": "2026-01-01T00:01:00.501+00:00",
        "last_primary_window": {"requests": 5, "errors": 0, "latency": [5, 0]},
    },
    "past_rollouts": [
        {"id": "iris-3-1767000000", "candidate": 3, "baseline": 1, "outcome": "rolled_back",
         "started_at": "2025-12-29T09:20:00.000+00:00",
         "finished_at": "2025-12-29T09:25:00.000+00:00", "duration_s": 300.0,
         "reason": "rolled back at canary 5%", "time_to_restore_s": 60.0},
        {"id": "iris-2-1766000000", "candidate": 2, "baseline": 1, "outcome": "aborted",
         "started_at": "2025-12-17T19:33:20.000+00:00",
         "finished_at": "2025-12-17T19:40:00.000+00:00", "duration_s": 400.0,
         "reason": "aborted by user"},
    ],
}


def test_the_stored_format_reads_typed_and_writes_back_unchanged(tmp_path: Path) -> None:
    path = state_path(tmp_path, "iris")
    path.parent.mkdir()
    path.write_bytes(orjson.dumps(WRITTEN))
    state = read_routing(tmp_path, "iris")
    assert state is not None and state.rollout is not None
    ro = state.rollout
    assert ro.state is RolloutState.RUNNING and ro.state.active
    assert ro.current.kind is StepKind.CANARY and ro.current.weight == 25.0
    assert ro.history[0].measured["mirrored"] == 400
    assert state.past_rollouts[0].outcome is RolloutState.ROLLED_BACK
    assert state.versions() == {1, 2}
    write_routing(tmp_path, "iris", state)
    assert orjson.loads(path.read_bytes()) == WRITTEN


def test_a_finished_rollout_summarises() -> None:
    doc = copy.deepcopy(WRITTEN["rollout"])
    doc.update(state="rolled_back", reason="r", finished_at="2026-01-01T00:02:00.000+00:00",
               exposed_since=1767225660.0)
    summary = Rollout.from_json(doc).summary()
    assert summary == RolloutSummary("iris-2-1767225600", 2, 1, RolloutState.ROLLED_BACK,
                                     doc["started_at"], doc["finished_at"], 120.0, "r", 60.0)
    assert not Rollout.from_json(doc).state.active
    assert RolloutSummary.from_json(summary.to_json()) == summary


def _broken(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(WRITTEN)
    *parents, last = path.split(".")
    target: Any = doc
    for p in parents:
        target = target[int(p)] if p.isdigit() else target[p]
    target[last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("rollout.state", "exploded"),
        ("rollout.candidate", "2"),
        ("rollout.step", 5),
        ("rollout.steps", []),
        ("rollout.steps.1.kind", "blue"),
        ("rollout.steps.1.weight", 150.0),
        ("rollout.steps.1.duration_s", 0),
        ("rollout.history", {}),
        ("rollout.history.0.step", "0"),
        ("past_rollouts.0.outcome", "won"),
        ("past_rollouts.0.duration_s", None),
    ],
)
def test_a_corrupt_rollout_is_an_invalid_routing_state(path: str, value: Any) -> None:
    with pytest.raises(ValueError):
        RoutingState.from_json(_broken(path, value))
