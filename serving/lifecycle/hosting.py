"""What the rollout controller needs of the model manager: the models, their routing states and
versions, the published versions, and a way to write routing (a small fake in unit tests)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from serving.lifecycle.states import State
from serving.registry.routing_state import RoutingState


class HostedVersion(Protocol):
    @property
    def version(self) -> int: ...
    @property
    def state(self) -> State: ...
    @property
    def reason(self) -> str: ...


class HostedModel(Protocol):
    @property
    def routing(self) -> RoutingState | None: ...
    @property
    def primary(self) -> HostedVersion | None: ...
    @property
    def versions(self) -> Mapping[int, HostedVersion]: ...


class Published(Protocol):
    def versions(self, model: str) -> list[int]: ...


class ModelHost(Protocol):
    @property
    def models(self) -> Mapping[str, HostedModel]: ...
    @property
    def layout(self) -> Published: ...
    def get_model(self, name: str) -> HostedModel: ...
    async def set_routing(self, name: str, state: RoutingState) -> object: ...
