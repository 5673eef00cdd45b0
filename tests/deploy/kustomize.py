"""A small kustomize for the tests: resources, strategic-merge patches (the subset of the
Kubernetes merge keys the overlays use; anything else in a kustomization fails the render),
`images:` and `replacements:` (one field copied between named objects). Neither Debian nor PyPI
ships kustomize itself; where a `kubectl` with kustomize is on the PATH, the tests compare its
rendering with this one."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

# Strategic-merge keys of the lists the overlays patch (Kubernetes' patchMergeKey); any other list
# is replaced whole, as Kubernetes does for lists without one (envFrom, command, args, ...).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "env": "name",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "patches", "images", "replacements"}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """A Deployment's pod spec (None for other kinds)."""
    return obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else None


def load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def merge(base: Any, patch: Any, key: str = "") -> Any:
    """Kubernetes strategic merge of `patch` into `base` (a copy), for the keys above."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        mk = MERGE_KEYS[key]
        out = copy.deepcopy(base)
        for item in patch:
            assert mk in item, f"a {key} patch item needs its merge key {mk}: {item}"
            index = next((i for i, x in enumerate(out) if x.get(mk) == item[mk]), None)
            if item.get("$patch") == "delete":
                assert index is not None, f"deleting {key} {item[mk]!r}, which the base lacks"
                del out[index]
            elif index is None:
                out.append(copy.deepcopy(item))
            else:
                out[index] = merge(out[index], item, key)
        return out
    return copy.deepcopy(patch)


def object_key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def field_parent(obj: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The map holding the field at a kustomize fieldPath (`a.b.[name=x].c`: keys, and list items
    chosen by one of their fields), and the field's key in it."""
    *steps, last = path.split(".")
    node: Any = obj
    for step in steps:
        if m := re.fullmatch(r"\[([^=\]]+)=([^\]]*)\]", step):
            [node] = [x for x in node if x.get(m.group(1)) == m.group(2)]
        else:
            node = node[step]
    assert last in node, f"{path}: no such field"
    return node, last


def replace(objects: list[dict[str, Any]], replacement: dict[str, Any]) -> None:
    """kustomize `replacements:`, for a source and targets named by kind and name."""
    assert set(replacement) == {"source", "targets"}, replacement
    source = replacement["source"]
    assert set(source) == {"kind", "name", "fieldPath"}, source
    [obj] = [o for o in objects if object_key(o) == (source["kind"], source["name"])]
    node, key = field_parent(obj, source["fieldPath"])
    value = node[key]
    for target in replacement["targets"]:
        assert set(target) == {"select", "fieldPaths"} and set(target["select"]) == {
            "kind", "name"}, target
        select = target["select"]
        [obj] = [o for o in objects if object_key(o) == (select["kind"], select["name"])]
        for path in target["fieldPaths"]:
            node, key = field_parent(obj, path)
            node[key] = copy.deepcopy(value)


def render(directory: Path) -> list[dict[str, Any]]:
    """What `kustomize build DIRECTORY` gives for the features our kustomizations use."""
    [kz] = load_docs(directory / "kustomization.yaml")
    unknown = set(kz) - KUSTOMIZATION_KEYS
    assert not unknown, f"{directory}: this renderer does not know {sorted(unknown)}"
    objects: list[dict[str, Any]] = []
    for resource in kz.get("resources", []):
        path = (directory / resource).resolve()
        objects += render(path) if path.is_dir() else load_docs(path)
    for entry in kz.get("patches", []):
        assert set(entry) == {"path"}, f"only file patches are rendered here: {entry}"
        for patch in load_docs(directory / entry["path"]):
            matches = [i for i, o in enumerate(objects) if object_key(o) == object_key(patch)]
            assert len(matches) == 1, f"{entry['path']}: no single target {object_key(patch)}"
            objects[matches[0]] = merge(objects[matches[0]], patch)
    for image in kz.get("images", []):
        new = f"{image.get('newName', image['name'])}:{image['newTag']}"
        for pod in (pod_spec(o) for o in objects if pod_spec(o) is not None):
            for c in pod.get("initContainers", []) + pod["containers"]:
                if c["image"].split(":")[0] == image["name"]:
                    c["image"] = new
    for replacement in kz.get("replacements", []):  # kustomize runs them last
        replace(objects, replacement)
    return objects



def normalized(obj: Any, key: str = "") -> Any:
    """Lists merged by key in any order (order has no meaning there; kustomize puts what a patch
    adds first, Kubernetes' own strategic merge last)."""
    if isinstance(obj, dict):
        return {k: normalized(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        items = [normalized(x) for x in obj]
        if key in MERGE_KEYS:
            items.sort(key=lambda x: str(x.get(MERGE_KEYS[key])))
        return items
    return obj

