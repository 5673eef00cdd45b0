"""Desired routing per model, kept in the registry so every replica routes the same way.

`<registry>/_state/<model>.json` holds the primary version, an optional canary (version, weight
in percent), shadow versions (version, mirrored fraction) and the model's rollout (plan, state,
history). `_state` is not a valid model name, so the registry never mistakes it for a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from serving.registry.layout import check_model_name, is_model_name, write_atomic
from serving.registry.rollout_state import Rollout, RolloutSummary

STATE_DIR = "_state"


@dataclass(frozen=True)
class Shadow:
    version: int
    fraction: float = 1.0  # share of requests mirrored, 0..1


@dataclass(frozen=True)
class RoutingState:
    """What the registry says about routing one model; written whole, atomically, and never
    changed in place (a change is a new state, written before it is applied)."""

    primary: int | None = None
    canary: int | None = None
    canary_weight: float = 0.0  # percent of routing keys sent to the canary
    shadows: list[Shadow] = field(default_factory=list)
    rollout: Rollout | None = None
    past_rollouts: list[RolloutSummary] = field(default_factory=list)  # finished, oldest first

    def to_json(self) -> dict[str, Any]:
        return {
            "primary": self.primary,
            "canary": self.canary,
            "canary_weight": self.canary_weight,
            "shadows": [{"version": s.version, "fraction": s.fraction} for s in self.shadows],
            "rollout": self.rollout.to_json() if self.rollout is not None else None,
            "past_rollouts": [p.to_json() for p in self.past_rollouts],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RoutingState:
        def version(v: Any) -> int | None:
            if v is None:
                return None
            if type(v) is not int or v < 1:
                raise ValueError(f"versions are positive integers, got {v!r}")
            return v

        weight = float(obj.get("canary_weight", 0.0))
        if not 0.0 <= weight <= 100.0:
            raise ValueError(f"canary_weight must be 0..100, got {weight}")
        shadows = []
        for s in obj.get("shadows", []):
            fraction = float(s.get("fraction", 1.0))
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"shadow fraction must be 0..1, got {fraction}")
            v = version(s.get("version"))
            if v is not None:
                shadows.append(Shadow(v, fraction))
        rollout = obj.get("rollout")
        return cls(
            primary=version(obj.get("primary")),
            canary=version(obj.get("canary")),
            canary_weight=weight,
            shadows=shadows,
            rollout=Rollout.from_json(rollout) if rollout is not None else None,
            past_rollouts=[RolloutSummary.from_json(p) for p in obj.get("past_rollouts") or []],
        )

    def versions(self) -> set[int]:
        """Every version this state needs loaded (an active rollout keeps both sides loaded)."""
        out = {s.version for s in self.shadows}
        out.update(v for v in (self.primary, self.canary) if v is not None)
        ro = self.rollout
        if ro is not None and ro.state.active:
            out.update((ro.baseline, ro.candidate))
        return out


def state_path(registry: Path | str, model: str) -> Path:
    return Path(registry) / STATE_DIR / f"{check_model_name(model)}.json"


def read_routing(registry: Path | str, model: str) -> RoutingState | None:
    """The model's routing state, or None when it has none; ValueError when it is corrupt."""
    path = state_path(registry, model)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return RoutingState.from_json(orjson.loads(raw))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"invalid routing state {path.name}: {exc}") from None


def routing_bytes(state: RoutingState) -> bytes:
    """The state file's content."""
    return orjson.dumps(state.to_json(), option=orjson.OPT_INDENT_2)


def write_routing(registry: Path | str, model: str, state: RoutingState) -> None:
    """Write the whole state atomically."""
    write_atomic(state_path(registry, model), routing_bytes(state))


def state_model(filename: str) -> str | None:
    """The model a state file (`<model>.json`) is for; None for any other name."""
    name = filename.removesuffix(".json")
    return name if filename.endswith(".json") and is_model_name(name) else None
