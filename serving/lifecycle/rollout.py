"""The rollout controller: moves a candidate version through shadow and canary steps, promotes
it while its numbers stay healthy, and rolls it back at once when they don't.

Its state (plan, step, history: `registry/rollout_state.py`) lives in the registry's routing
state, so a restarted server resumes a rollout where it stood and every replica routes by it.
Every transition builds the next state from a copy, writes it, and only then applies it: a write
that fails (disk full, object store down) leaves the old state in force, is logged, and the
next tick decides again. One controller runs per deployment (`--rollout-controller` on one
replica); it reads its numbers from a MetricSource: this process's own counters by default, or
anything else that can answer the same questions (a Prometheus query API, for several replicas).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import NamedTuple

from serving.errors import BadRequest, NotFound, Unavailable
from serving.lifecycle.analysis import (
    ShadowWindow,
    Thresholds,
    Verdict,
    Window,
    judge_bake,
    judge_canary,
    judge_shadow,
)
from serving.lifecycle.hosting import ModelHost
from serving.lifecycle.leadership import Leadership
from serving.lifecycle.plan import Plan
from serving.lifecycle.prometheus import (
    FleetMetrics,
    FleetSources,
    FleetStep,
    PrometheusSource,
    StepWindow,
    rollout_metrics,
)
from serving.lifecycle.sources import MetricSource
from serving.lifecycle.states import State
from serving.registry.rollout_state import (
    Decision,
    Rollout,
    RolloutHistory,
    RolloutState,
    RolloutStatus,
    StepKind,
    delivery_summary,
    now_iso,
)
from serving.registry.routing_state import RoutingState, Shadow

log = logging.getLogger("serving.rollout")

MAX_PAST = 100  # finished rollouts a routing state remembers


# ---- the controller --------------------------------------------------------------------------

class _Numbers(NamedTuple):
    primary: Window  # the baseline as primary
    canary: Window  # the candidate as canary
    promoted: Window  # the candidate as primary (baking)
    shadow: ShadowWindow


class _Judged(NamedTuple):
    kind: str
    weight: float
    verdict: Verdict
    primary: Window | None  # a canary step's primary window (the bake's baseline if it passes)


_DRIVEN = (RolloutState.RUNNING, RolloutState.BAKING)  # what ticks move (not paused ones)


def _require(ro: Rollout, state: RolloutState, action: str) -> None:
    if ro.state is not state:
        raise BadRequest(f"cannot {action} a rollout that is {ro.state}")


class RolloutController:
    """Drives every model's active rollout; decisions are recorded in its history."""

    def __init__(
        self, manager: ModelHost, source: MetricSource, tick_s: float = 0.2,
        clock: Callable[[], float] = time.time, fleet: FleetMetrics | None = None,
        leadership: Leadership | None = None, sources: FleetSources | None = None,
    ) -> None:
        self.manager = manager
        self.source = source
        self.tick_s = tick_s
        self.clock = clock  # unix seconds: step start times are stored in the registry
        self.fleet = fleet or FleetMetrics()  # the server's metric settings (a plan's override)
        self.leadership = leadership  # None: this controller alone drives rollouts
        self._sources = sources or FleetSources()
        self._term: float | None = None
        # model -> (step marker, cumulative numbers when the window opened)
        self._marks: dict[str, tuple[tuple[str, RolloutState, int], _Numbers]] = {}
        self._lock = asyncio.Lock()

    # ---- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            await self.tick()

    async def tick(self) -> None:
        """One pass over every model with an active rollout (run() does one each tick_s)."""
        if self.leadership is not None:
            if self.leadership.term != self._term:  # a new term: windows open afresh
                self._term, self._marks = self.leadership.term, {}
            if self._term is None:
                return  # another replica holds the lease
        for name, model in list(self.manager.models.items()):
            rs = model.routing
            if rs is None or rs.rollout is None or not rs.rollout.state.active:
                continue
            try:
                async with self._lock:
                    await self._tick(name)
            except Exception:  # one model's trouble must not stop the others' rollouts
                log.exception("rollout tick failed for %s (decided again next tick)", name)

    async def _tick(self, name: str) -> None:
        rs = self.manager.get_model(name).routing
        if rs is None or rs.rollout is None or rs.rollout.state not in _DRIVEN:
            return
        fleet = self._sources.get(rs.rollout.metrics)
        judged = (await self._judge_fleet(name, rs.rollout, fleet) if fleet is not None
                  else self._judge(name, rs.rollout))
        if judged is not None:
            nxt = self._decide(rs, rs.rollout, judged)
            if nxt is not None:
                await self._save(name, nxt)

    def _numbers(self, name: str, ro: Rollout) -> _Numbers:
        base, cand = str(ro.baseline), str(ro.candidate)
        return _Numbers(
            self.source.window(name, base, "primary"), self.source.window(name, cand, "canary"),
            self.source.window(name, cand, "primary"), self.source.shadow(name, cand),
        )

    async def _judge_fleet(self, name: str, ro: Rollout, src: PrometheusSource) -> _Judged | None:
        """The verdict on the step's window summed over the fleet; while Prometheus cannot give
        it, a wait, then a pause."""
        baking = ro.state is RolloutState.BAKING
        end = ro.step_started_at + (ro.bake_s if baking else ro.current.duration_s)
        got = await src.step(StepWindow(name, ro.baseline, ro.candidate, ro.step_started_at, end,
                                        baking), self.clock())
        if not isinstance(got, FleetStep):
            late = got is not None and got.late and not baking  # a bake waits: resume reruns a step
            verdict = Verdict("pause" if late else "wait", f"no numbers: {got}", {})
            kind, weight = ("bake", 100.0) if baking else (ro.current.kind.value, ro.current.weight)
            return None if got is None else _Judged(kind, weight, verdict, None)
        judged = self._verdict(ro, _Numbers(*got[:4]))
        judged.verdict.measured.update(got.measured)
        judged.verdict.reason += got.note
        return judged

    def _judge(self, name: str, ro: Rollout) -> _Judged | None:
        """The verdict on the current step's window; None while the window is open."""
        marker = (ro.id, ro.state, ro.step)
        mark = self._marks.get(name)
        if mark is None or mark[0] != marker:
            # A new step, or a restarted server resuming one: the window opens now.
            self._marks[name] = (marker, self._numbers(name, ro))
            return None
        baking = ro.state is RolloutState.BAKING
        if self.clock() < ro.step_started_at + (ro.bake_s if baking else ro.current.duration_s):
            return None
        now, start = self._numbers(name, ro), mark[1]
        return self._verdict(ro, _Numbers(
            now.primary.minus(start.primary), now.canary.minus(start.canary),
            now.promoted.minus(start.promoted), now.shadow.minus(start.shadow)))

    def _verdict(self, ro: Rollout, d: _Numbers) -> _Judged:
        """The verdict on a step's numbers."""
        baking = ro.state is RolloutState.BAKING
        step = ro.current  # baking: the last step, whose min_requests the bake keeps
        t = Thresholds.from_json(ro.thresholds)
        if step.min_requests is not None:
            t = replace(t, min_requests=step.min_requests)
        if baking:
            baseline = Window(**ro.baseline_window) if ro.baseline_window else Window()
            return _Judged("bake", 100.0,
                           judge_bake(baseline, d.promoted, t), None)
        if step.kind is StepKind.SHADOW:
            verdict = judge_shadow(d.shadow, t)
            return _Judged(step.kind.value, step.weight, verdict, None)
        verdict = judge_canary(d.primary, d.canary, t)
        return _Judged(step.kind.value, step.weight, verdict, d.primary)

    def _decide(self, rs: RoutingState, ro: Rollout, j: _Judged) -> RoutingState | None:
        """The routing state a verdict leads to (None: nothing to write)."""
        verdict = j.verdict
        if verdict.decision in ("wait", "pause"):
            if ro.waiting and (verdict.decision, verdict.reason) == ("wait", ro.history[-1].reason):
                return None  # recorded once per step and reason
            entry = self._entry(ro, j.kind, j.weight, verdict, "controller")
            if verdict.decision == "pause":  # the numbers stayed missing
                return replace(rs, rollout=replace(ro.decided(entry), state=RolloutState.PAUSED,
                                                   reason=verdict.reason, waiting=False))
            return replace(rs, rollout=replace(ro.decided(entry), waiting=True))
        ro = replace(ro.decided(self._entry(ro, j.kind, j.weight, verdict, "controller")),
                     waiting=False)
        if verdict.decision == "fail":
            reason = f"rolled back at {j.kind} {j.weight:g}%: {verdict.reason}"
            if ro.state is RolloutState.BAKING:
                reason = f"promotion reverted during bake: {verdict.reason}"
            return self._finished(replace(ro, exposed_since=ro.step_started_at),
                                  RolloutState.ROLLED_BACK, reason)
        if ro.state is RolloutState.BAKING:
            return RoutingState(primary=ro.candidate, rollout=replace(
                ro, state=RolloutState.PROMOTED, finished_at=now_iso()))
        if j.primary is not None:
            ro = replace(ro, last_primary_window=asdict(j.primary))
        return self._advanced(ro)

    # ---- transitions: each builds the next routing state; _save writes, then applies it --------

    def _entry(self, ro: Rollout, kind: str, weight: float, verdict: Verdict,
               by: str) -> Decision:
        log.info("rollout %s step %s (%s %g%%): %s: %s", ro.id, ro.step, kind, weight,
                 verdict.decision, verdict.reason)
        return Decision(now_iso(), ro.step, kind, weight, verdict.decision, verdict.reason,
                        verdict.measured, by)

    def _manual(self, rs: RoutingState, ro: Rollout, action: str, by: str) -> Rollout:
        verdict = Verdict(action, f"{action} by {by}", {})
        return ro.decided(self._entry(ro, "manual", rs.canary_weight, verdict, by))

    def _at_step(self, ro: Rollout) -> RoutingState:
        step = ro.current
        if step.kind is StepKind.SHADOW:
            return RoutingState(primary=ro.baseline, shadows=[Shadow(ro.candidate, 1.0)],
                                rollout=ro)
        return RoutingState(primary=ro.baseline, canary=ro.candidate,
                            canary_weight=step.weight, rollout=ro)

    def _advanced(self, ro: Rollout) -> RoutingState:
        ro = replace(ro, step_started_at=self.clock())
        if ro.step + 1 < len(ro.steps):
            return self._at_step(replace(ro, step=ro.step + 1))
        return self._promoted(ro)

    def _promoted(self, ro: Rollout) -> RoutingState:
        """The candidate becomes the primary; the old one stays loaded while it bakes."""
        done = ro.bake_s <= 0
        ro = replace(
            ro, state=RolloutState.PROMOTED if done else RolloutState.BAKING,
            step_started_at=self.clock(), baseline_window=ro.last_primary_window,
            last_primary_window=None, finished_at=now_iso() if done else None,
        )
        return RoutingState(primary=ro.candidate, rollout=ro)

    def _finished(self, ro: Rollout, state: RolloutState, reason: str) -> RoutingState:
        return RoutingState(primary=ro.baseline, rollout=replace(
            ro, state=state, reason=reason, finished_at=now_iso()))

    async def _save(self, name: str, rs: RoutingState) -> None:
        """Write the next routing state, then apply it. When the write fails the state in force
        stays as it was (nothing here changed it), and the error is logged and raised."""
        ro = rs.rollout
        current = self.manager.get_model(name).routing
        past = list(current.past_rollouts) if current is not None else []
        finished = ro is not None and not ro.state.active and all(p.id != ro.id for p in past)
        if ro is not None:
            ro = replace(ro, updated_at=now_iso())
            if finished:
                past.append(ro.summary())
        try:
            await self.manager.set_routing(
                name, replace(rs, rollout=ro, past_rollouts=past[-MAX_PAST:])
            )
        except Exception as exc:
            log.error("model %s: could not save its routing state (%s): the state in force "
                      "stays until a save succeeds", name, exc)
            raise Unavailable(f"could not save the routing state of {name!r}: {exc}") from exc
        if finished and ro is not None and ro.reason:  # logged once it holds
            log.warning("rollout %s: %s", ro.id, ro.reason)

    # ---- the API ------------------------------------------------------------------------------

    def _new_id(self, name: str, candidate: int) -> str:
        """Unique even for rollouts started within the same second (the history is keyed by
        it), and still readable: model, candidate, start second."""
        return f"{name}-{candidate}-{int(self.clock())}-{secrets.token_hex(4)}"

    async def start(self, name: str, plan: Plan, by: str = "user") -> RolloutStatus:
        async with self._lock:
            model = self.manager.get_model(name)
            rs = model.routing
            if rs is not None and rs.rollout is not None and rs.rollout.state.active:
                raise BadRequest(f"model {name!r} already has a rollout {rs.rollout.state}")
            if model.primary is None:
                raise BadRequest(f"model {name!r} has no ready primary to compare with")
            if plan.candidate not in self.manager.layout.versions(name):
                raise NotFound(f"model {name!r} has no published version {plan.candidate}")
            baseline = model.primary.version
            if plan.candidate == baseline:
                raise BadRequest(f"version {plan.candidate} is already the primary")
            fleet = rollout_metrics(plan.metrics, getattr(model, "config", None), self.fleet)
            ro = Rollout(
                metrics=fleet.to_json() if fleet.source == "prometheus" else None,
                id=self._new_id(name, plan.candidate), candidate=plan.candidate,
                baseline=baseline, steps=plan.steps, thresholds=plan.thresholds.to_json(),
                bake_s=plan.bake_s, state=RolloutState.RUNNING, step=0,
                step_started_at=self.clock(), started_at=now_iso(), started_by=by,
            )
            await self._save(name, self._at_step(ro))
            model = self.manager.get_model(name)
            mv = model.versions.get(plan.candidate)
            if (mv is None or mv.state is not State.READY) and model.routing is not None \
                    and model.routing.rollout is not None:
                why = mv.reason if mv else "not loaded"
                await self._save(name, self._finished(model.routing.rollout,
                                 RolloutState.ROLLED_BACK, f"candidate failed to load: {why}"))
            return self.status(name)

    async def act(self, name: str, action: str, by: str = "user") -> RolloutStatus:
        async with self._lock:
            rs = self.manager.get_model(name).routing
            if rs is None or rs.rollout is None:
                raise NotFound(f"model {name!r} has no rollout")
            ro = rs.rollout
            if not ro.state.active:
                raise BadRequest(f"the rollout of {name!r} is already {ro.state}")
            if action == "pause":
                _require(ro, RolloutState.RUNNING, action)
                nxt = replace(rs, rollout=replace(self._manual(rs, ro, action, by),
                                                  state=RolloutState.PAUSED))
            elif action == "resume":
                _require(ro, RolloutState.PAUSED, action)
                nxt = replace(rs, rollout=replace(self._manual(rs, ro, action, by), reason="",
                              state=RolloutState.RUNNING, step_started_at=self.clock()))
            elif action == "promote":
                ro = self._manual(rs, ro, action, by)
                nxt = self._promoted(
                    replace(ro, bake_s=0.0) if ro.state is RolloutState.BAKING else ro)
            elif action == "abort":
                nxt = self._finished(self._manual(rs, ro, action, by), RolloutState.ABORTED,
                                     f"aborted by {by}")
            else:
                raise NotFound(f"unknown rollout action {action!r}")
            await self._save(name, nxt)
            return self.status(name)

    def status(self, name: str) -> RolloutStatus:
        model = self.manager.get_model(name)
        rs = model.routing
        if rs is None or rs.rollout is None:
            raise NotFound(f"model {name!r} has no rollout")
        primary = model.primary.version if model.primary else None
        return RolloutStatus(name, primary, rs.canary, rs.canary_weight,
                             tuple(s.version for s in rs.shadows), rs.rollout)

    def history(self, name: str) -> RolloutHistory:
        """Delivery numbers from every finished rollout of a model."""
        model = self.manager.get_model(name)
        past = model.routing.past_rollouts if model.routing else []
        return RolloutHistory(name, tuple(past), delivery_summary(past))
