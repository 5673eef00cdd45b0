"""A model's routing table: which version answers a request and which versions get a copy.

The registry's routing state says what *should* serve (`registry/routing_state.py`); this
module resolves it against the versions that are READY, whenever either changes, into a table
the request path only reads: `route(key)` picks the primary or the sticky canary, `mirror()`
picks the shadows that get a copy. Generic in the version type, so it is tested with plain
objects.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from serving.registry.routing_state import RoutingState
from serving.routing.canary import goes_to_canary

V = TypeVar("V")

PRIMARY = "primary"
CANARY = "canary"


@dataclass(frozen=True, slots=True)
class RoutingTable(Generic[V]):
    """Who serves one model now. Replaced whole, never changed: a request that read it keeps a
    consistent view while the manager builds the next one."""

    primary: V | None = None
    canary: V | None = None
    canary_weight: float = 0.0  # percent of routing keys
    shadows: tuple[tuple[V, float], ...] = ()  # (version, share of requests mirrored)

    @classmethod
    def resolve(cls, state: RoutingState | None, ready: Mapping[int, V]) -> RoutingTable[V]:
        """The state's primary when it is READY, else the highest READY version; the canary and
        the shadows when they are READY and not the primary."""
        if state is not None and state.primary is not None and state.primary in ready:
            primary_version: int | None = state.primary
        else:
            primary_version = max(ready) if ready else None
        primary = ready[primary_version] if primary_version is not None else None
        if state is None:
            return cls(primary)
        canary, weight = None, 0.0
        c = state.canary
        if c is not None and c in ready and state.canary_weight > 0 and c != primary_version:
            canary, weight = ready[c], state.canary_weight
        shadows = tuple(
            (ready[s.version], s.fraction)
            for s in state.shadows
            if s.version in ready and s.version != primary_version and s.fraction > 0
        )
        return cls(primary, canary, weight, shadows)

    def route(
        self, key: str | None, draw: Callable[[], float] = random.random
    ) -> tuple[V | None, str]:
        """(version, "primary" | "canary") for a request with this routing key: the same key
        always lands on the same side at a given weight, and raising the weight only moves keys
        to the canary. Without a key, a fresh draw, weight-proportional."""
        canary = self.canary
        if canary is not None and (
            goes_to_canary(key, self.canary_weight) if key is not None
            else draw() * 100.0 < self.canary_weight
        ):
            return canary, CANARY
        return self.primary, PRIMARY

    def mirror(self, draw: Callable[[], float] = random.random) -> tuple[V, ...]:
        """The shadows one primary request is copied to (each with its own share)."""
        if not self.shadows:
            return ()
        return tuple(v for v, fraction in self.shadows if fraction >= 1.0 or draw() < fraction)
