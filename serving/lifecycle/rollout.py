"""The rollout controller: moves a candidate version through shadow and canary steps, promotes
it while its numbers stay healthy, and rolls it back at once when they don't.

Its state (plan, step, history) lives in the registry's routing state, so a restarted server
resumes a rollout where it stood and every replica routes by it. One controller runs per
deployment (`--rollout-controller` on one replica); it reads its numbers from a MetricSource:
this process's own counters by default, or anything else that can answer the same questions
(a Prometheus query API, for several replicas).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Protocol

from serving.errors import BadRequest, NotFound
from serving.lifecycle.analysis import (
    ERROR_OUTCOMES,
    ShadowWindow,
    Thresholds,
    Verdict,
    Window,
    judge_canary,
    judge_shadow,
)
from serving.lifecycle.manager import ModelManager
from serving.registry.routing_state import ACTIVE_ROLLOUT, RoutingState, Shadow

log = logging.getLogger("serving.rollout")


class MetricSource(Protocol):
    """Cumulative numbers per (model, version, route); the controller diffs them per window."""

    def window(self, model: str, version: str, route: str) -> Window: ...

    def shadow(self, model: str, version: str) -> ShadowWindow: ...


class InProcessSource:
    """This server's own counters (ServingMetrics)."""

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics

    def window(self, model: str, version: str, route: str) -> Window:
        stats = self.metrics.requests.get((model, version, route))
        if stats is None:
            return Window()
        errors = sum(stats.outcomes.get(o, 0) for o in ERROR_OUTCOMES)
        return Window(sum(stats.outcomes.values()), errors, list(stats.latency.counts))

    def shadow(self, model: str, version: str) -> ShadowWindow:
        s = self.metrics.shadows.get((model, version))
        if s is None:
            return ShadowWindow()
        return ShadowWindow(
            s.compared, s.label_rows, s.disagreements, s.mirrored, s.errors,
            list(s.primary_latency.counts), list(s.shadow_latency.counts),
        )


def parse_steps(text: str, duration_s: float, min_requests: int | None) -> list[dict[str, Any]]:
    """`shadow,5,25,50` -> a shadow step, then canary steps at those percentages."""
    steps: list[dict[str, Any]] = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        if part == "shadow":
            step: dict[str, Any] = {"kind": "shadow", "weight": 0.0}
        else:
            try:
                weight = float(part.rstrip("%"))
            except ValueError:
                raise BadRequest(
                    f"a step is 'shadow' or a canary percentage, not {part!r}"
                ) from None
            if not 0 < weight < 100:
                raise BadRequest(f"canary weights lie between 0 and 100, not {weight}")
            step = {"kind": "canary", "weight": weight}
        step["duration_s"] = duration_s
        if min_requests is not None:
            step["min_requests"] = min_requests
        steps.append(step)
    if not steps:
        raise BadRequest("a rollout needs at least one step")
    return steps


MAX_PAST = 100


def summarize(ro: dict[str, Any]) -> dict[str, Any]:
    """What delivery metrics need of a finished rollout."""
    started = datetime.fromisoformat(ro["started_at"])
    finished = datetime.fromisoformat(ro.get("finished_at") or _now())
    out = {
        "id": ro["id"], "candidate": ro["candidate"], "baseline": ro["baseline"],
        "outcome": ro["state"], "started_at": ro["started_at"],
        "finished_at": finished.isoformat(timespec="milliseconds"),
        "duration_s": round((finished - started).total_seconds(), 3),
        "reason": ro.get("reason", ""),
    }
    if ro["state"] == "rolled_back" and ro.get("exposed_since"):
        # time to restore: from when the failing candidate (or promotion) met traffic until
        # everything was back on the baseline
        out["time_to_restore_s"] = round(finished.timestamp() - ro["exposed_since"], 3)
    return out


def delivery_summary(past: list[dict[str, Any]]) -> dict[str, Any]:
    promoted = [p for p in past if p["outcome"] == "promoted"]
    rolled_back = [p for p in past if p["outcome"] == "rolled_back"]
    restores = [p["time_to_restore_s"] for p in rolled_back if "time_to_restore_s" in p]
    span_days = 0.0
    if len(promoted) >= 2:
        first = datetime.fromisoformat(promoted[0]["finished_at"])
        last = datetime.fromisoformat(promoted[-1]["finished_at"])
        span_days = (last - first).total_seconds() / 86400
    return {
        "rollouts": len(past),
        "promoted": len(promoted),
        "rolled_back": len(rolled_back),
        "aborted": sum(p["outcome"] == "aborted" for p in past),
        "rollback_share": round(len(rolled_back) / len(past), 4) if past else 0.0,
        "mean_time_to_promote_s": (
            round(sum(p["duration_s"] for p in promoted) / len(promoted), 3) if promoted else None
        ),
        "mean_time_to_restore_s": round(sum(restores) / len(restores), 3) if restores else None,
        "promotions_per_day": (
            round((len(promoted) - 1) / span_days, 3) if span_days > 0 else None
        ),
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class RolloutController:
    """Drives every model's active rollout; decisions are recorded in its history."""

    def __init__(self, manager: ModelManager, source: MetricSource, tick_s: float = 0.2) -> None:
        self.manager = manager
        self.source = source
        self.tick_s = tick_s
        # model -> (step marker, cumulative numbers when the window opened)
        self._marks: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._lock = asyncio.Lock()

    # ---- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            for name, model in list(self.manager.models.items()):
                rs = model.routing
                if rs is None or not rs.rollout or rs.rollout.get("state") not in ACTIVE_ROLLOUT:
                    continue
                try:
                    async with self._lock:
                        await self._tick(name)
                except Exception:  # one model's trouble must not stop the others' rollouts
                    log.exception("rollout tick failed for %s", name)

    def _marker(self, ro: dict[str, Any]) -> Any:
        return (ro["id"], ro["state"], ro["step"])

    def _numbers(self, name: str, ro: dict[str, Any]) -> dict[str, Any]:
        base, cand = str(ro["baseline"]), str(ro["candidate"])
        return {
            "primary": self.source.window(name, base, "primary"),
            "canary": self.source.window(name, cand, "canary"),
            "promoted": self.source.window(name, cand, "primary"),
            "shadow": self.source.shadow(name, cand),
        }

    async def _tick(self, name: str) -> None:
        rs = self.manager.models[name].routing
        assert rs is not None and rs.rollout is not None
        ro = rs.rollout
        if ro["state"] == "paused":
            return
        mark = self._marks.get(name)
        if mark is None or mark[0] != self._marker(ro):
            # A new step, or a restarted server resuming one: the window opens now.
            self._marks[name] = (self._marker(ro), self._numbers(name, ro))
            return
        if ro["state"] == "baking":
            duration = ro["bake_s"]
        else:
            duration = ro["steps"][ro["step"]]["duration_s"]
        if time.time() < ro["step_started_at"] + duration:
            return
        now_numbers = self._numbers(name, ro)
        start = mark[1]
        t = Thresholds.from_json(ro["thresholds"])
        if ro["state"] == "baking":
            baseline = Window(**ro["baseline_window"]) if ro.get("baseline_window") else Window()
            verdict = judge_canary(baseline, now_numbers["promoted"].minus(start["promoted"]), t)
            kind, weight = "bake", 100.0
        else:
            step = ro["steps"][ro["step"]]
            kind, weight = step["kind"], step["weight"]
            if "min_requests" in step:
                t = Thresholds(**{**t.to_json(), "min_requests": step["min_requests"]})
            if kind == "shadow":
                verdict = judge_shadow(now_numbers["shadow"].minus(start["shadow"]), t)
            else:
                verdict = judge_canary(
                    now_numbers["primary"].minus(start["primary"]),
                    now_numbers["canary"].minus(start["canary"]),
                    t,
                )
                if verdict.decision == "pass":
                    ro["last_primary_window"] = asdict(
                        now_numbers["primary"].minus(start["primary"])
                    )
        if verdict.decision == "wait":
            if not ro.get("waiting"):
                ro["waiting"] = True
                self._record(ro, kind, weight, verdict, "controller")
                await self._save(name, rs)
            return
        ro.pop("waiting", None)
        self._record(ro, kind, weight, verdict, "controller")
        if verdict.decision == "fail":
            ro["exposed_since"] = ro["step_started_at"]
            reason = f"rolled back at {kind} {weight:g}%: {verdict.reason}"
            if ro["state"] == "baking":
                reason = f"promotion reverted during bake: {verdict.reason}"
            await self._rollback(name, rs, "rolled_back", reason)
        elif ro["state"] == "baking":
            ro["state"] = "promoted"
            ro["finished_at"] = _now()
            await self._save(name, RoutingState(primary=ro["candidate"], rollout=ro))
        else:
            await self._advance(name, rs)

    # ---- transitions --------------------------------------------------------------------------

    def _record(self, ro: dict[str, Any], kind: str, weight: float, verdict: Verdict,
                by: str) -> None:
        ro["history"].append({
            "at": _now(), "step": ro["step"], "kind": kind, "weight": weight,
            "decision": verdict.decision, "reason": verdict.reason,
            "measured": verdict.measured, "by": by,
        })
        ro["last_decision"] = verdict.decision
        log.info("rollout %s step %s (%s %g%%): %s: %s", ro["id"], ro["step"], kind, weight,
                 verdict.decision, verdict.reason)

    def _routing_for_step(self, ro: dict[str, Any]) -> RoutingState:
        step = ro["steps"][ro["step"]]
        if step["kind"] == "shadow":
            return RoutingState(primary=ro["baseline"], shadows=[Shadow(ro["candidate"], 1.0)],
                                rollout=ro)
        return RoutingState(primary=ro["baseline"], canary=ro["candidate"],
                            canary_weight=step["weight"], rollout=ro)

    async def _save(self, name: str, rs: RoutingState) -> None:
        ro = rs.rollout
        if ro is not None:
            ro["updated_at"] = _now()
        current = self.manager.get_model(name).routing
        past = list(current.past_rollouts) if current is not None else []
        if ro is not None and ro["state"] not in ACTIVE_ROLLOUT and not any(
            p["id"] == ro["id"] for p in past
        ):
            past.append(summarize(ro))
        rs.past_rollouts = past[-MAX_PAST:]
        await self.manager.set_routing(name, rs)

    def history(self, name: str) -> dict[str, Any]:
        """Delivery numbers from every finished rollout of a model."""
        model = self.manager.get_model(name)
        past = model.routing.past_rollouts if model.routing else []
        return {"model": name, "rollouts": past, "summary": delivery_summary(past)}

    async def _advance(self, name: str, rs: RoutingState) -> None:
        ro = rs.rollout
        assert ro is not None
        ro["step_started_at"] = time.time()
        if ro["step"] + 1 < len(ro["steps"]):
            ro["step"] += 1
            await self._save(name, self._routing_for_step(ro))
            return
        await self._promote(name, ro)

    async def _promote(self, name: str, ro: dict[str, Any]) -> None:
        """The candidate becomes the primary; the old one stays loaded while it bakes."""
        ro["state"] = "baking" if ro["bake_s"] > 0 else "promoted"
        ro["step_started_at"] = time.time()
        ro["baseline_window"] = ro.pop("last_primary_window", None)
        if ro["state"] == "promoted":
            ro["finished_at"] = _now()
        await self._save(name, RoutingState(primary=ro["candidate"], rollout=ro))

    async def _rollback(self, name: str, rs: RoutingState, state: str, reason: str) -> None:
        ro = rs.rollout
        assert ro is not None
        ro["state"] = state
        ro["reason"] = reason
        ro["finished_at"] = _now()
        log.warning("rollout %s: %s", ro["id"], reason)
        await self._save(name, RoutingState(primary=ro["baseline"], rollout=ro))

    # ---- the API ------------------------------------------------------------------------------

    async def start(self, name: str, plan: dict[str, Any], by: str = "user") -> dict[str, Any]:
        async with self._lock:
            model = self.manager.get_model(name)
            rs = model.routing
            if rs and rs.rollout and rs.rollout.get("state") in ACTIVE_ROLLOUT:
                raise BadRequest(f"model {name!r} already has a rollout {rs.rollout['state']}")
            if model.primary is None:
                raise BadRequest(f"model {name!r} has no ready primary to compare with")
            candidate = plan.get("candidate")
            if type(candidate) is not int or candidate < 1:
                raise BadRequest("'candidate' must be a version number")
            if candidate not in self.manager.layout.versions(name):
                raise NotFound(f"model {name!r} has no published version {candidate}")
            baseline = model.primary.version
            if candidate == baseline:
                raise BadRequest(f"version {candidate} is already the primary")
            steps = plan.get("steps") or parse_steps("shadow,5,25,50", 300.0, None)
            for step in steps:
                if step.get("kind") not in ("shadow", "canary"):
                    raise BadRequest("each step's kind is 'shadow' or 'canary'")
                if float(step.get("duration_s", 0)) <= 0:
                    raise BadRequest("each step needs a positive duration_s")
            try:
                thresholds = Thresholds.from_json(plan.get("thresholds"))
            except (TypeError, ValueError) as exc:
                raise BadRequest(f"thresholds: {exc}") from None
            ro = {
                "id": f"{name}-{candidate}-{int(time.time())}",
                "candidate": candidate, "baseline": baseline, "steps": steps,
                "thresholds": thresholds.to_json(), "bake_s": float(plan.get("bake_s", 60.0)),
                "state": "running", "step": 0, "step_started_at": time.time(),
                "started_at": _now(), "started_by": by, "history": [],
            }
            await self._save(name, self._routing_for_step(ro))
            mv = self.manager.get_model(name).versions.get(candidate)
            if mv is None or mv.state.value != "READY":
                why = mv.reason if mv else "not loaded"
                await self._rollback(name, self.manager.get_model(name).routing or RoutingState(),
                                     "rolled_back", f"candidate failed to load: {why}")
            return self.status(name)

    async def act(self, name: str, action: str, by: str = "user") -> dict[str, Any]:
        async with self._lock:
            model = self.manager.get_model(name)
            rs = model.routing
            if rs is None or not rs.rollout:
                raise NotFound(f"model {name!r} has no rollout")
            ro = rs.rollout
            state = ro["state"]
            if state not in ACTIVE_ROLLOUT:
                raise BadRequest(f"the rollout of {name!r} is already {state}")
            verdict = Verdict(action, f"{action} by {by}", {})
            if action == "pause":
                if state != "running":
                    raise BadRequest(f"cannot pause a rollout that is {state}")
                ro["state"] = "paused"
                self._record(ro, "manual", rs.canary_weight, verdict, by)
                await self._save(name, rs)
            elif action == "resume":
                if state != "paused":
                    raise BadRequest(f"cannot resume a rollout that is {state}")
                ro["state"] = "running"
                ro["step_started_at"] = time.time()
                self._record(ro, "manual", rs.canary_weight, verdict, by)
                await self._save(name, rs)
            elif action == "promote":
                self._record(ro, "manual", rs.canary_weight, verdict, by)
                ro["bake_s"] = 0.0 if state == "baking" else ro["bake_s"]
                await self._promote(name, ro)
            elif action == "abort":
                self._record(ro, "manual", rs.canary_weight, verdict, by)
                await self._rollback(name, rs, "aborted", f"aborted by {by}")
            else:
                raise NotFound(f"unknown rollout action {action!r}")
            return self.status(name)

    def status(self, name: str) -> dict[str, Any]:
        model = self.manager.get_model(name)
        rs = model.routing
        if rs is None or not rs.rollout:
            raise NotFound(f"model {name!r} has no rollout")
        return {
            "model": name,
            "primary": model.primary.version if model.primary else None,
            "canary": rs.canary, "canary_weight": rs.canary_weight,
            "shadows": [s.version for s in rs.shadows],
            "rollout": rs.rollout,
        }
