"""The routing table on plain objects: who serves, who gets a copy, and stickiness."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from serving.registry.routing_state import RoutingState, Shadow
from serving.routing.table import RoutingTable


@dataclass(frozen=True)
class V:
    version: int


READY = {n: V(n) for n in (1, 2, 3)}


def test_no_state_serves_the_highest_ready_version() -> None:
    table = RoutingTable.resolve(None, READY)
    assert table.primary == V(3) and table.canary is None and table.shadows == ()
    assert RoutingTable.resolve(None, {}).primary is None
    assert table.route("any") == (V(3), "primary") and table.mirror() == ()


def test_state_primary_when_ready_else_the_highest() -> None:
    assert RoutingTable.resolve(RoutingState(primary=1), READY).primary == V(1)
    assert RoutingTable.resolve(RoutingState(primary=7), READY).primary == V(3)


@pytest.mark.parametrize(
    ("state", "canary", "shadows"),
    [
        pytest.param(RoutingState(primary=1, canary=2, canary_weight=30.0), V(2), (), id="canary"),
        pytest.param(RoutingState(primary=1, canary=9, canary_weight=30.0), None, (),
                     id="canary-not-ready"),
        pytest.param(RoutingState(primary=1, canary=1, canary_weight=30.0), None, (),
                     id="canary-is-primary"),
        pytest.param(RoutingState(primary=1, canary=2, canary_weight=0.0), None, (),
                     id="canary-weight-0"),
        pytest.param(RoutingState(primary=1, shadows=[Shadow(2, 1.0), Shadow(1, 1.0),
                                                      Shadow(9, 1.0), Shadow(3, 0.0)]),
                     None, ((V(2), 1.0),), id="shadows-ready-not-primary-nonzero"),
    ],
)
def test_canary_and_shadows_only_when_ready_and_not_the_primary(
    state: RoutingState, canary: V | None, shadows: tuple[tuple[V, float], ...]
) -> None:
    table = RoutingTable.resolve(state, READY)
    assert table.primary == V(1) and table.canary == canary and table.shadows == shadows


def test_keys_are_sticky_and_raising_the_weight_only_moves_keys_to_the_canary() -> None:
    keys = [f"user-{i}" for i in range(2000)]
    at = {}
    for weight in (10.0, 30.0, 60.0):
        table = RoutingTable.resolve(RoutingState(primary=1, canary=2, canary_weight=weight),
                                     READY)
        at[weight] = {k: table.route(k)[1] for k in keys}
        assert all(table.route(k)[1] == at[weight][k] for k in keys[:100])  # same key, same side
        share = sum(r == "canary" for r in at[weight].values()) / len(keys)
        assert abs(share - weight / 100) < 0.04, (weight, share)  # binomial sd <= 1.1%
    for low, high in itertools.pairwise((10.0, 30.0, 60.0)):
        assert all(at[high][k] == "canary" for k in keys if at[low][k] == "canary")
    table = RoutingTable.resolve(RoutingState(primary=1, canary=2, canary_weight=60.0), READY)
    assert table.route("user-0")[0] == (V(2) if at[60.0]["user-0"] == "canary" else V(1))


def test_without_a_key_each_request_draws() -> None:
    table = RoutingTable.resolve(RoutingState(primary=1, canary=2, canary_weight=25.0), READY)
    assert table.route(None, draw=lambda: 0.2) == (V(2), "canary")
    assert table.route(None, draw=lambda: 0.3) == (V(1), "primary")


def test_mirror_draws_each_shadow_by_its_fraction() -> None:
    state = RoutingState(primary=1, shadows=[Shadow(2, 1.0), Shadow(3, 0.5)])
    table = RoutingTable.resolve(state, READY)
    assert table.mirror(draw=lambda: 0.4) == (V(2), V(3))
    assert table.mirror(draw=lambda: 0.6) == (V(2),)
