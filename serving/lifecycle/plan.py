"""A rollout plan as a user asks for it: the candidate, the steps, the thresholds, the bake.

The POSTed JSON is validated here, once; a bad plan is a 400 that says what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serving.errors import BadRequest
from serving.lifecycle.analysis import Thresholds
from serving.registry.rollout_state import Step, StepKind

DEFAULT_STEPS = "shadow,5,25,50"


def parse_steps(text: str, duration_s: float, min_requests: int | None) -> list[Step]:
    """`shadow,5,25,50` -> a shadow step, then canary steps at those percentages."""
    steps: list[Step] = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        if part == "shadow":
            steps.append(Step(StepKind.SHADOW, 0.0, duration_s, min_requests))
            continue
        try:
            weight = float(part.rstrip("%"))
        except ValueError:
            raise BadRequest(f"a step is 'shadow' or a canary percentage, not {part!r}") from None
        if not 0 < weight < 100:
            raise BadRequest(f"canary weights lie between 0 and 100, not {weight}")
        steps.append(Step(StepKind.CANARY, weight, duration_s, min_requests))
    if not steps:
        raise BadRequest("a rollout needs at least one step")
    return steps


@dataclass(frozen=True)
class Plan:
    """What a user asks for when starting a rollout (the POSTed JSON, validated)."""

    candidate: int
    steps: tuple[Step, ...]
    thresholds: Thresholds
    bake_s: float = 60.0
    metrics: dict[str, Any] | None = None  # FleetMetrics settings over the server's

    @classmethod
    def from_json(cls, doc: Any) -> Plan:
        """Steps as a list of step objects, or as text (`"shadow,5,25"`) with
        `step_duration_s` and `min_requests`; BadRequest for anything else."""
        if not isinstance(doc, dict):
            raise BadRequest("the rollout plan must be a JSON object")
        candidate = doc.get("candidate")
        if type(candidate) is not int or candidate < 1:
            raise BadRequest("'candidate' must be a version number")
        bake_s = doc.get("bake_s", 60.0)
        if not isinstance(bake_s, int | float) or isinstance(bake_s, bool) or bake_s < 0:
            raise BadRequest("bake_s must be a non-negative number")
        try:
            thresholds = Thresholds.from_json(doc.get("thresholds"))
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"thresholds: {exc}") from None
        metrics = doc.get("metrics")
        if metrics is not None and not isinstance(metrics, dict):  # checked at the start
            raise BadRequest("metrics must be a JSON object (source, prometheus_url, ...)")
        return cls(candidate, _plan_steps(doc), thresholds, float(bake_s), metrics)


def _plan_steps(doc: dict[str, Any]) -> tuple[Step, ...]:
    steps = doc.get("steps") or DEFAULT_STEPS
    if isinstance(steps, list):
        try:
            return tuple(Step.from_json(s) for s in steps)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    if not isinstance(steps, str):
        raise BadRequest("'steps' is a list of steps or text such as 'shadow,5,25,50'")
    duration = doc.get("step_duration_s", 300.0)
    if not isinstance(duration, int | float) or isinstance(duration, bool) or duration <= 0:
        raise BadRequest("step_duration_s must be a positive number")
    min_requests = doc.get("min_requests")
    if min_requests is not None and (type(min_requests) is not int or min_requests < 1):
        raise BadRequest("min_requests must be a positive integer")
    return tuple(parse_steps(steps, float(duration), min_requests))
