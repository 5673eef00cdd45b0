"""The rollout controller with a fake metric source, a fake clock and a temporary registry: every
decision and transition in milliseconds, no server."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from serving.errors import BadRequest, NotFound, Unavailable
from serving.lifecycle.analysis import ShadowWindow, Window
from serving.lifecycle.plan import Plan
from serving.lifecycle.rollout import RolloutController
from serving.lifecycle.states import State
from serving.monitoring.counters import LATENCY_BUCKETS
from serving.registry.rollout_state import RolloutState, RolloutStatus
from serving.registry.routing_state import RoutingState, read_routing, write_routing

MODEL = "iris"


def lat(n: int, ms: float = 2.0) -> list[int]:
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    counts[next(i for i, b in enumerate(LATENCY_BUCKETS) if b * 1e3 >= ms)] = n
    return counts


class FakeSource:
    """Cumulative numbers the test makes up, per (version, route)."""

    def __init__(self) -> None:
        self.windows: dict[tuple[str, str], Window] = defaultdict(lambda: Window(0, 0, lat(0)))
        self.shadows: dict[str, ShadowWindow] = defaultdict(ShadowWindow)

    def window(self, model: str, version: str, route: str) -> Window:
        return self.windows[(version, route)]

    def shadow(self, model: str, version: str) -> ShadowWindow:
        return self.shadows[version]

    def serve(self, version: int, route: str, n: int, errors: int = 0, ms: float = 2.0) -> None:
        w = self.windows[(str(version), route)]
        counts = [a + b for a, b in zip(w.latency, lat(n, ms), strict=True)]
        self.windows[(str(version), route)] = Window(w.requests + n, w.errors + errors, counts)

    def mirror(self, version: int, n: int, disagree: int = 0) -> None:
        s = self.shadows[str(version)]
        self.shadows[str(version)] = ShadowWindow(
            s.compared + n, s.label_rows + n, s.disagreements + disagree, s.mirrored + n,
            s.errors, lat(0), lat(0))


@dataclass
class FakeVersion:
    version: int
    state: State = State.READY
    reason: str = ""


@dataclass
class FakeModel:
    routing: RoutingState | None
    primary: FakeVersion | None
    versions: dict[int, FakeVersion] = field(default_factory=dict)


class Published:
    def __init__(self, versions: list[int]) -> None:
        self._versions = versions

    def versions(self, model: str) -> list[int]:
        return self._versions


class FakeHost:
    """The manager's part the controller uses: the routing state goes through a real registry
    directory (written, read back, applied); `fail_writes` makes the next writes fail."""

    def __init__(self, registry: Path, versions: dict[int, FakeVersion]) -> None:
        self.registry = registry
        state = RoutingState(primary=1)
        write_routing(registry, MODEL, state)
        self.models = {MODEL: FakeModel(state, versions[1], versions)}
        self.layout = Published([1, 2, 3])
        self.fail_writes = 0
        self.writes = 0

    def get_model(self, name: str) -> FakeModel:
        if name not in self.models:
            raise NotFound(name)
        return self.models[name]

    async def set_routing(self, name: str, state: RoutingState) -> object:
        if self.fail_writes:
            self.fail_writes -= 1
            raise OSError(28, "No space left on device")
        write_routing(self.registry, name, state)
        self.writes += 1
        model = self.models[name]
        model.routing = read_routing(self.registry, name)
        assert model.routing is not None and model.routing.primary is not None
        model.primary = model.versions[model.routing.primary]
        return model


class Clock:
    def __init__(self) -> None:
        self.now = 1_767_225_600.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    host: FakeHost
    source: FakeSource
    clock: Clock
    ctl: RolloutController

    @property
    def routing(self) -> RoutingState:
        state = self.host.models[MODEL].routing
        assert state is not None
        return state

    @property
    def ro(self) -> Any:
        assert self.routing.rollout is not None
        return self.routing.rollout

    def on_disk(self) -> RoutingState:
        state = read_routing(self.host.registry, MODEL)
        assert state is not None
        return state

    def tick(self, advance_s: float = 0.0) -> None:
        self.clock.now += advance_s
        asyncio.run(self.ctl.tick())

    def start(self, **plan: Any) -> RolloutStatus:
        doc = {"candidate": 2, "steps": "50", "step_duration_s": 10, "min_requests": 20,
               "bake_s": 0, **plan}
        return asyncio.run(self.ctl.start(MODEL, Plan.from_json(doc)))

    def act(self, action: str) -> RolloutStatus:
        return asyncio.run(self.ctl.act(MODEL, action))


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    versions = {n: FakeVersion(n) for n in (1, 2)}
    host, source, clock = FakeHost(tmp_path, versions), FakeSource(), Clock()
    return Rig(host, source, clock, RolloutController(host, source, clock=clock))


def decisions(rig: Rig) -> list[tuple[str, float, str]]:
    return [(h.kind, h.weight, h.decision) for h in rig.ro.history]


def test_healthy_candidate_goes_shadow_canary_bake_promoted(rig: Rig) -> None:
    doc = rig.start(steps="shadow,50", bake_s=5)
    assert doc.rollout.state is RolloutState.RUNNING and doc.shadows == (2,)
    rig.tick()  # the shadow window opens
    rig.source.mirror(2, 30)
    rig.tick(advance_s=10)
    assert rig.routing.canary == 2 and rig.routing.canary_weight == 50.0 and rig.ro.step == 1
    rig.tick()  # the canary window opens
    rig.source.serve(1, "primary", 300)
    rig.source.serve(2, "canary", 300)
    rig.tick(advance_s=10)
    assert rig.ro.state is RolloutState.BAKING and rig.routing.primary == 2
    assert rig.ro.baseline_window is not None and rig.ro.baseline_window["requests"] == 300
    rig.tick()  # the bake window opens; it is judged on the plan's thresholds (200 requests)
    rig.source.serve(2, "primary", 300)
    rig.tick(advance_s=5)
    assert rig.ro.state is RolloutState.PROMOTED and rig.ro.finished_at
    assert decisions(rig) == [("shadow", 0.0, "pass"), ("canary", 50.0, "pass"),
                              ("bake", 100.0, "pass")]
    on_disk = rig.on_disk()
    assert on_disk.primary == 2 and on_disk.rollout == rig.ro
    assert [p.outcome for p in on_disk.past_rollouts] == [RolloutState.PROMOTED]
    writes = rig.host.writes
    rig.tick(advance_s=100)  # finished: the controller leaves it alone
    assert rig.host.writes == writes


def test_erroring_candidate_is_rolled_back(rig: Rig) -> None:
    rig.start()
    rig.tick()
    rig.source.serve(1, "primary", 200)
    rig.source.serve(2, "canary", 200, errors=40)
    rig.tick(advance_s=10)
    ro = rig.ro
    assert ro.state is RolloutState.ROLLED_BACK and "error_rate" in ro.reason
    assert rig.routing.primary == 1 and rig.routing.canary is None
    assert decisions(rig) == [("canary", 50.0, "fail")]
    (past,) = rig.on_disk().past_rollouts
    assert past.outcome is RolloutState.ROLLED_BACK and past.time_to_restore_s is not None


def test_too_few_requests_waits_once_then_decides(rig: Rig) -> None:
    rig.start()
    rig.tick()
    rig.source.serve(1, "primary", 5)
    rig.source.serve(2, "canary", 5)
    rig.tick(advance_s=10)
    assert decisions(rig) == [("canary", 50.0, "wait")] and rig.ro.waiting
    assert rig.ro.state is RolloutState.RUNNING and rig.routing.canary_weight == 50.0
    writes = rig.host.writes
    rig.tick(advance_s=1)
    assert rig.host.writes == writes  # a wait is recorded once per step
    rig.source.serve(1, "primary", 30)
    rig.source.serve(2, "canary", 30)
    rig.tick(advance_s=1)
    assert decisions(rig)[-1] == ("canary", 50.0, "pass") and not rig.ro.waiting
    assert rig.ro.state is RolloutState.PROMOTED  # bake_s 0: promoted at once


@pytest.mark.parametrize("steps", ["50", "shadow"])
def test_a_bake_with_a_small_or_no_baseline_window_still_ends(rig: Rig, steps: str) -> None:
    # the last canary window's primary side had fewer requests than the plan's thresholds
    # (200) ask for, or there was no canary step: the bake used to wait for ever
    rig.start(steps=steps, bake_s=5)
    rig.tick()
    rig.source.mirror(2, 30)
    rig.source.serve(1, "primary", 30)
    rig.source.serve(2, "canary", 30)
    rig.tick(advance_s=10)
    assert rig.ro.state is RolloutState.BAKING
    rig.tick()
    rig.source.serve(2, "primary", 30)
    rig.tick(advance_s=5)
    assert rig.ro.state is RolloutState.PROMOTED, decisions(rig)
    assert decisions(rig)[-1] == ("bake", 100.0, "pass")


def test_a_failed_write_leaves_the_old_state_in_force_and_is_retried(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.start()
    rig.tick()
    rig.source.serve(1, "primary", 200)
    rig.source.serve(2, "canary", 200, errors=40)
    before, on_disk = rig.routing, rig.on_disk()
    rig.host.fail_writes = 1
    with caplog.at_level(logging.ERROR, "serving.rollout"):
        rig.tick(advance_s=10)
    # The decision was to roll back, but it could not be saved: nothing changed anywhere.
    assert rig.routing is before and rig.routing == on_disk == rig.on_disk()
    assert rig.ro.state is RolloutState.RUNNING and rig.ro.history == ()
    assert rig.routing.canary == 2 and rig.routing.canary_weight == 50.0
    assert "No space left on device" in caplog.text
    rig.tick(advance_s=0.2)  # the next tick decides again, and the write goes through
    assert rig.ro.state is RolloutState.ROLLED_BACK and rig.routing.canary is None
    assert decisions(rig) == [("canary", 50.0, "fail")]
    assert rig.on_disk() == rig.routing


def test_a_failed_write_on_a_manual_action_is_a_503_and_changes_nothing(rig: Rig) -> None:
    rig.start()
    before = rig.routing
    rig.host.fail_writes = 1
    with pytest.raises(Unavailable, match="could not save the routing state"):
        rig.act("abort")
    assert rig.routing is before and rig.ro.state is RolloutState.RUNNING
    assert rig.act("abort").rollout.state == "aborted"


def test_pause_resume_promote_abort(rig: Rig) -> None:
    rig.start(steps="20,40", bake_s=60)
    assert rig.act("pause").rollout.state == "paused"
    with pytest.raises(BadRequest, match="cannot pause"):
        rig.act("pause")
    rig.tick(advance_s=100)  # paused: no window, no decision
    assert [h.decision for h in rig.ro.history] == ["pause"]
    assert rig.act("resume").rollout.state == "running"
    assert rig.act("promote").rollout.state == "baking"
    assert rig.routing.primary == 2
    assert rig.act("promote").rollout.state == "promoted"  # promote while baking: done
    with pytest.raises(BadRequest, match="already promoted"):
        rig.act("abort")
    rig.start(candidate=1)  # back to v1
    with pytest.raises(BadRequest, match="already has a rollout running"):
        rig.start(candidate=1)


def test_rollouts_started_within_one_second_keep_their_own_history(rig: Rig) -> None:
    for _ in range(3):  # the clock does not move
        rig.start()
        rig.act("abort")
    past = rig.on_disk().past_rollouts
    assert len(past) == 3 and len({p.id for p in past}) == 3


def test_start_checks_the_candidate(rig: Rig) -> None:
    with pytest.raises(NotFound, match="no published version 9"):
        rig.start(candidate=9)
    with pytest.raises(BadRequest, match="already the primary"):
        rig.start(candidate=1)
    rig.host.models[MODEL].versions[3] = FakeVersion(3, State.FAILED, "bad onnx")
    doc = rig.start(candidate=3)
    assert doc.rollout.state is RolloutState.ROLLED_BACK
    assert doc.rollout.reason == "candidate failed to load: bad onnx"


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({"candidate": "2"}, "'candidate' must be a version number"),
        ({"candidate": 2, "steps": "10,abc"}, "canary percentage"),
        ({"candidate": 2, "steps": "shadow,100"}, "between 0 and 100"),
        ({"candidate": 2, "steps": "10", "step_duration_s": 0}, "step_duration_s"),
        ({"candidate": 2, "steps": [{"kind": "blue", "duration_s": 1}]}, "kind"),
        ({"candidate": 2, "steps": [{"kind": "canary", "duration_s": 1}]}, "weight"),
        ({"candidate": 2, "thresholds": {"nope": 1}}, "unknown thresholds"),
        ({"candidate": 2, "bake_s": "long"}, "bake_s"),
    ],
)
def test_a_bad_plan_is_a_400(plan: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        Plan.from_json(plan)
