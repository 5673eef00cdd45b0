"""The rollout document kept in a model's routing state: its plan, where it stands, what it
decided, and the summaries of finished rollouts.

Frozen dataclasses, turned into and read back from the routing state's JSON here and nowhere
else. Nothing changes a rollout in place: the controller builds the next one
(`dataclasses.replace`), writes it, and only then makes it the one in force, so a write that
fails leaves the old state serving.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

_T = TypeVar("_T")


def now_iso() -> str:
    """The timestamps a rollout records: UTC, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class RolloutState(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    BAKING = "baking"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"

    @property
    def active(self) -> bool:
        """Still moving (the controller drives it and both versions stay loaded)."""
        return self in (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.BAKING)


class StepKind(enum.StrEnum):
    SHADOW = "shadow"
    CANARY = "canary"


def _typed(value: Any, kind: type[_T], what: str) -> _T:
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # type: ignore[return-value]
    if not ok:
        raise ValueError(f"{what} must be {kind.__name__}, got {value!r}")
    return value  # type: ignore[no-any-return]


def _object(obj: Any, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError(f"{what} must be a JSON object")
    return obj


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the plan: mirror to the candidate, or send it `weight` percent of keys."""

    kind: StepKind
    weight: float  # percent of routing keys on the candidate (0 for a shadow step)
    duration_s: float
    min_requests: int | None = None  # overrides the thresholds' for this step

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind.value, "weight": self.weight, "duration_s": self.duration_s,
        }
        if self.min_requests is not None:
            out["min_requests"] = self.min_requests
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Step:
        obj = _object(obj, "a step")
        try:
            kind = StepKind(obj.get("kind"))
        except ValueError:
            raise ValueError("each step's kind is 'shadow' or 'canary'") from None
        duration = _typed(obj.get("duration_s", 0.0), float, "duration_s")
        if not duration > 0:
            raise ValueError("each step needs a positive duration_s")
        weight = 0.0
        if kind is StepKind.CANARY:
            weight = _typed(obj.get("weight"), float, "a canary step's weight")
            if not 0 < weight < 100:
                raise ValueError(f"canary weights lie between 0 and 100, not {weight}")
        min_requests = obj.get("min_requests")
        if min_requests is not None and (type(min_requests) is not int or min_requests < 1):
            raise ValueError("min_requests must be a positive integer")
        return cls(kind, weight, duration, min_requests)


@dataclass(frozen=True, slots=True)
class Decision:
    """One entry of a rollout's history: what was decided at a step, why, and on what numbers."""

    at: str
    step: int
    kind: str  # "shadow", "canary", "bake" or "manual"
    weight: float
    decision: str  # "pass", "fail", "wait", or the manual action
    reason: str
    measured: dict[str, Any]
    by: str  # "controller" or who acted

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, obj: Any) -> Decision:
        obj = _object(obj, "a history entry")
        return cls(
            _typed(obj.get("at"), str, "at"), _typed(obj.get("step"), int, "step"),
            _typed(obj.get("kind"), str, "kind"), _typed(obj.get("weight"), float, "weight"),
            _typed(obj.get("decision"), str, "decision"), _typed(obj.get("reason"), str, "reason"),
            _object(obj.get("measured", {}), "measured"), _typed(obj.get("by"), str, "by"),
        )


@dataclass(frozen=True, slots=True)
class Rollout:
    """A rollout of `candidate` against `baseline`: the plan, where it stands, its history."""

    id: str
    candidate: int
    baseline: int
    steps: tuple[Step, ...]
    thresholds: dict[str, Any]  # analysis.Thresholds.to_json(); read back with from_json
    bake_s: float
    state: RolloutState
    step: int
    step_started_at: float  # unix time the current step (or the bake) began
    started_at: str
    started_by: str
    history: tuple[Decision, ...] = ()
    updated_at: str | None = None
    finished_at: str | None = None
    reason: str = ""  # why it finished (rolled back, aborted)
    last_decision: str | None = None
    waiting: bool = False  # the last decision was "wait" (recorded once per step)
    exposed_since: float | None = None  # unix time the failing candidate met traffic
    last_primary_window: dict[str, Any] | None = None  # analysis.Window of the last canary step
    baseline_window: dict[str, Any] | None = None  # ...kept as the bake's baseline
    metrics: dict[str, Any] | None = None  # where its numbers come from (FleetMetrics; None: here)

    @property
    def current(self) -> Step:
        return self.steps[self.step]

    def decided(self, entry: Decision) -> Rollout:
        """This rollout with one more history entry."""
        return replace(self, history=(*self.history, entry), last_decision=entry.decision)

    def summary(self) -> RolloutSummary:
        """What delivery metrics keep of a finished rollout."""
        started = datetime.fromisoformat(self.started_at)
        finished = datetime.fromisoformat(self.finished_at or now_iso())
        restore = None
        if self.state is RolloutState.ROLLED_BACK and self.exposed_since:
            # from when the failing candidate (or promotion) met traffic until everything was
            # back on the baseline
            restore = round(finished.timestamp() - self.exposed_since, 3)
        return RolloutSummary(
            self.id, self.candidate, self.baseline, self.state, self.started_at,
            finished.isoformat(timespec="milliseconds"),
            round((finished - started).total_seconds(), 3), self.reason, restore,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "candidate": self.candidate, "baseline": self.baseline,
            "steps": [s.to_json() for s in self.steps], "thresholds": self.thresholds,
            "bake_s": self.bake_s, "state": self.state.value, "step": self.step,
            "step_started_at": self.step_started_at, "started_at": self.started_at,
            "started_by": self.started_by, "history": [h.to_json() for h in self.history],
        }
        optional = {
            "updated_at": self.updated_at, "finished_at": self.finished_at,
            "reason": self.reason or None, "last_decision": self.last_decision,
            "waiting": self.waiting or None, "exposed_since": self.exposed_since,
            "last_primary_window": self.last_primary_window,
            "baseline_window": self.baseline_window, "metrics": self.metrics,
        }
        out.update((k, v) for k, v in optional.items() if v is not None)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Rollout:
        obj = _object(obj, "the rollout")
        steps = obj.get("steps")
        if not isinstance(steps, list) or not steps:
            raise ValueError("a rollout needs at least one step")
        history = obj.get("history", [])
        if not isinstance(history, list):
            raise ValueError("the rollout's history must be a list")
        try:
            state = RolloutState(obj.get("state"))
        except ValueError:
            raise ValueError(f"unknown rollout state {obj.get('state')!r}") from None
        step = _typed(obj.get("step", 0), int, "step")
        if not 0 <= step < len(steps):
            raise ValueError(f"step {step} is not in the plan")
        return cls(
            id=_typed(obj.get("id"), str, "id"),
            candidate=_version(obj.get("candidate")), baseline=_version(obj.get("baseline")),
            steps=tuple(Step.from_json(s) for s in steps),
            thresholds=_object(obj.get("thresholds", {}), "thresholds"),
            bake_s=_typed(obj.get("bake_s", 0.0), float, "bake_s"), state=state, step=step,
            step_started_at=_typed(obj.get("step_started_at"), float, "step_started_at"),
            started_at=_typed(obj.get("started_at"), str, "started_at"),
            started_by=_typed(obj.get("started_by", "user"), str, "started_by"),
            history=tuple(Decision.from_json(h) for h in history),
            updated_at=_optional(obj, "updated_at", str),
            finished_at=_optional(obj, "finished_at", str),
            reason=_typed(obj.get("reason", ""), str, "reason"),
            last_decision=_optional(obj, "last_decision", str),
            waiting=_typed(obj.get("waiting", False), bool, "waiting"),
            exposed_since=_optional(obj, "exposed_since", float),
            last_primary_window=_optional(obj, "last_primary_window", dict),
            baseline_window=_optional(obj, "baseline_window", dict),
            metrics=_optional(obj, "metrics", dict),
        )


@dataclass(frozen=True, slots=True)
class RolloutSummary:
    """A finished rollout, as the routing state remembers it (oldest first, bounded)."""

    id: str
    candidate: int
    baseline: int
    outcome: RolloutState
    started_at: str
    finished_at: str
    duration_s: float
    reason: str = ""
    time_to_restore_s: float | None = None  # rolled back: exposure to restore

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["outcome"] = self.outcome.value
        if self.time_to_restore_s is None:
            del out["time_to_restore_s"]
        return out

    @classmethod
    def from_json(cls, obj: Any) -> RolloutSummary:
        obj = _object(obj, "a past rollout")
        try:
            outcome = RolloutState(obj.get("outcome"))
        except ValueError:
            raise ValueError(f"unknown rollout outcome {obj.get('outcome')!r}") from None
        return cls(
            _typed(obj.get("id"), str, "id"), _version(obj.get("candidate")),
            _version(obj.get("baseline")), outcome,
            _typed(obj.get("started_at"), str, "started_at"),
            _typed(obj.get("finished_at"), str, "finished_at"),
            _typed(obj.get("duration_s"), float, "duration_s"),
            _typed(obj.get("reason", ""), str, "reason"),
            _optional(obj, "time_to_restore_s", float),
        )


def _version(v: Any) -> int:
    if type(v) is not int or v < 1:
        raise ValueError(f"versions are positive integers, got {v!r}")
    return v


def _optional(obj: dict[str, Any], key: str, kind: type[_T]) -> _T | None:
    value = obj.get(key)
    return None if value is None else _typed(value, kind, key)


@dataclass(frozen=True)
class DeliverySummary:
    """Delivery numbers over a model's finished rollouts."""

    rollouts: int
    promoted: int
    rolled_back: int
    aborted: int
    rollback_share: float
    mean_time_to_promote_s: float | None
    mean_time_to_restore_s: float | None
    promotions_per_day: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any) -> DeliverySummary:
        obj = _object(obj, "a delivery summary")
        return cls(**{f.name: obj.get(f.name) for f in fields(cls)})


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def delivery_summary(past: list[RolloutSummary]) -> DeliverySummary:
    promoted = [p for p in past if p.outcome is RolloutState.PROMOTED]
    rolled_back = [p for p in past if p.outcome is RolloutState.ROLLED_BACK]
    span_days = 0.0
    if len(promoted) >= 2:
        first = datetime.fromisoformat(promoted[0].finished_at)
        last = datetime.fromisoformat(promoted[-1].finished_at)
        span_days = (last - first).total_seconds() / 86400
    return DeliverySummary(
        rollouts=len(past), promoted=len(promoted), rolled_back=len(rolled_back),
        aborted=sum(p.outcome is RolloutState.ABORTED for p in past),
        rollback_share=round(len(rolled_back) / len(past), 4) if past else 0.0,
        mean_time_to_promote_s=_mean([p.duration_s for p in promoted]),
        mean_time_to_restore_s=_mean(
            [p.time_to_restore_s for p in rolled_back if p.time_to_restore_s is not None]
        ),
        promotions_per_day=round((len(promoted) - 1) / span_days, 3) if span_days > 0 else None,
    )


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    """A model's routing now and its latest rollout (the rollout status route's answer)."""

    model: str
    primary: int | None
    canary: int | None
    canary_weight: float
    shadows: tuple[int, ...]
    rollout: Rollout

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "primary": self.primary, "canary": self.canary,
            "canary_weight": self.canary_weight, "shadows": list(self.shadows),
            "rollout": self.rollout.to_json(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> RolloutStatus:
        obj = _object(obj, "a rollout status")
        return cls(
            _typed(obj.get("model"), str, "model"), _optional(obj, "primary", int),
            _optional(obj, "canary", int), _typed(obj.get("canary_weight"), float, "weight"),
            tuple(obj.get("shadows") or ()), Rollout.from_json(obj.get("rollout")),
        )


@dataclass(frozen=True, slots=True)
class RolloutHistory:
    """A model's finished rollouts and their delivery numbers (the history route's answer)."""

    model: str
    rollouts: tuple[RolloutSummary, ...]
    summary: DeliverySummary

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "rollouts": [r.to_json() for r in self.rollouts],
                "summary": self.summary.to_json()}

    @classmethod
    def from_json(cls, obj: Any) -> RolloutHistory:
        obj = _object(obj, "a rollout history")
        return cls(_typed(obj.get("model"), str, "model"),
                   tuple(RolloutSummary.from_json(r) for r in obj.get("rollouts") or ()),
                   DeliverySummary.from_json(obj.get("summary")))
