"""Where the deploy/ manifests are, and how the tests look things up in rendered objects."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import kubernetes_validate

from serving.config import ServerConfig, load_server_config
from tests.deploy.kustomize import load_docs, object_key, pod_spec

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
KSERVE = ROOT / "deploy/kserve"
BUILDS = {"base": K8S / "base", "s3": K8S / "overlays/s3"}
ADAPTER_RULES = K8S / "prometheus-adapter-rules.yaml"
# The oldest Kubernetes release still commonly run, and the newest the package knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# Kinds that are CRDs, absent from the Kubernetes schemas: checked by their own tests below.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
SETTINGS = {f.name for f in fields(ServerConfig)}
# The Deployment and Service every build has (the HPA scales this Deployment), and the s3
# overlay's one-replica rollout controller and the Service in front of it alone.
SERVER = "serving"
CONTROLLER = "serving-rollout-controller"
ADMIN = "serving-admin"


def yaml_files(directory: Path) -> set[Path]:
    return {*directory.rglob("*.yaml"), *directory.rglob("*.yml")}


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [obj] = [o for o in objects if o["kind"] == kind]
    return obj


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [obj] = [o for o in objects if object_key(o) == (kind, name)]
    return obj


def deployments(objects: list[dict[str, Any]]) -> list[str]:
    return [o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"]


def server_container(objects: list[dict[str, Any]], deployment: str = SERVER) -> dict[str, Any]:
    pod = pod_spec(named(objects, "Deployment", deployment))
    [c] = [c for c in pod["containers"] if c["name"] == "serving"]
    return c


def settings_env(objects: list[dict[str, Any]], deployment: str = SERVER) -> dict[str, str]:
    """The environment the server container gets from the ConfigMap and its literal env (which
    outranks envFrom, as in Kubernetes)."""
    container = server_container(objects, deployment)
    configmaps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def server_config(objects: list[dict[str, Any]], deployment: str = SERVER) -> ServerConfig:
    env = {k: v for k, v in settings_env(objects, deployment).items()
           if k.startswith("SERVING_") and k[len("SERVING_"):].lower() in SETTINGS}
    return load_server_config({}, env=env)


def match_labels(selector: dict[str, Any]) -> dict[str, str]:
    """A label selector's matchLabels; the manifests use no matchExpressions (not evaluated)."""
    assert set(selector) == {"matchLabels"}, selector
    return selector["matchLabels"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def pod_labels(objects: list[dict[str, Any]], deployment: str) -> dict[str, str]:
    return named(objects, "Deployment", deployment)["spec"]["template"]["metadata"]["labels"]


def rollout_controllers(objects: list[dict[str, Any]]) -> list[str]:
    """The Deployments whose server runs the rollout controller."""
    return [d for d in deployments(objects) if server_config(objects, d).rollout_controller]


def probes(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")
            if k in container}


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return number


def standalone_manifests() -> list[Path]:
    """Manifests kept beside a kustomization but not in it (examples such as a Secret)."""
    covered = {ADAPTER_RULES}
    for directory in BUILDS.values():
        [kz] = load_docs(directory / "kustomization.yaml")
        covered.add(directory / "kustomization.yaml")
        covered |= {directory / r for r in kz.get("resources", [])}
        covered |= {directory / p["path"] for p in kz.get("patches", [])}
    return sorted(p for p in yaml_files(K8S) - covered)
