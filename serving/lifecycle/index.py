"""Triton's repository index: every model and version in the registry, with its state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from serving.lifecycle.states import ModelVersion
from serving.registry.layout import Layout


class Model(Protocol):
    """What the index reads of the manager's Model (which imports this module)."""

    @property
    def versions(self) -> Mapping[int, ModelVersion]: ...
    @property
    def failed(self) -> bool: ...
    @property
    def reason(self) -> str: ...


def repository_index(
    layout: Layout, models: Mapping[str, Model], refused: dict[tuple[str, int], str], registry: str
) -> list[dict[str, str]]:
    """Entries for the models in the registry, those loaded, and versions an S3 sync refused
    (`refused`: (model, version) -> why)."""
    out: list[dict[str, str]] = []
    names = set(layout.model_names()) | set(models) | {n for n, _ in refused}
    for name in sorted(names):
        not_synced = {v: f"not synced from {registry}: {why}"
                      for (n, v), why in refused.items() if n == name}
        out.extend(_model_entries(layout, name, models.get(name), not_synced))
    return out


def _model_entries(
    layout: Layout, name: str, model: Model | None, not_synced: dict[int, str]
) -> list[dict[str, str]]:
    try:
        published = layout.versions(name)
    except OSError:  # unreadable: the model's own entry says why, if loading it failed
        published = []
    loaded = model.versions if model else {}
    out = []
    for version in sorted(set(published) | set(loaded) | set(not_synced)):
        mv = loaded.get(version)
        if mv is not None:
            out.append(_entry(name, version, mv.state.value, mv.reason))
        elif version in not_synced:
            out.append(_entry(name, version, "FAILED", not_synced[version]))
        elif model is not None and model.failed:
            out.append(_entry(name, version, "FAILED", model.reason))
        else:
            out.append(_entry(name, version, "UNAVAILABLE",
                              "not loaded (version policy or unloaded)"))
    if not out:
        state = "FAILED" if model is not None and model.failed else "UNAVAILABLE"
        out.append(_entry(name, "", state, model.reason if model else "no published versions"))
    return out


def _entry(name: str, version: int | str, state: str, reason: str) -> dict[str, str]:
    return {"name": name, "version": str(version), "state": state, "reason": reason}
