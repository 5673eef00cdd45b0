"""Every Kubernetes object in deploy/k8s, as the base and each overlay render, validates offline
against the Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields fail); where a
`kubectl` with kustomize is on the PATH, its rendering equals ours (tests/deploy/kustomize.py)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.kustomize import (
    load_docs,
    normalized,
    object_key,
    render,
)
from tests.deploy.objects import (
    ADMIN,
    BUILDS,
    CONTROLLER,
    CRD_KINDS,
    K8S_VERSIONS,
    SERVER,
    named,
    standalone_manifests,
)


def validate(obj: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} (Kubernetes {version}): "
                        f"{exc.json_path}: {exc.message}")


def test_rendered_objects_validate_against_kubernetes_schemas(build: tuple) -> None:
    name, objects = build
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "ServiceMonitor", "ServiceAccount"} <= kinds, name
    assert len({object_key(o) for o in objects}) == len(objects), "duplicate objects"
    if name == "s3":  # validated below like the rest
        assert {("Deployment", CONTROLLER), ("Service", ADMIN)} <= {object_key(o) for o in objects}
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue  # not in the Kubernetes schemas; test_service_monitor_scrapes_the_service
        validate(obj)


def test_every_other_yaml_file_in_deploy_k8s_is_a_valid_object() -> None:
    """Nothing escapes: a YAML file in deploy/k8s is a kustomization, a resource or a patch of one
    (checked through the rendering), the adapter rules (checked with the metrics) or, as here, a
    complete object kept beside them (an example Secret), validated on its own."""
    assert standalone_manifests(), "the s3 overlay's example Secret"
    for path in standalone_manifests():
        for obj in load_docs(path):
            assert {"apiVersion", "kind", "metadata"} <= obj.keys(), path
            validate(obj)


def test_a_broken_manifest_is_refused() -> None:
    """The validation is strict: a misspelt field or a wrong type fails."""
    deployment = named(render(BUILDS["base"]), "Deployment", SERVER)
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    for obj in (typo, wrong):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(obj, K8S_VERSIONS[-1], strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None,
                    reason="no kubectl here: the Python rendering stands alone")
def test_rendering_matches_kubectl_kustomize(build: tuple) -> None:
    name, objects = build
    out = subprocess.run(["kubectl", "kustomize", str(BUILDS[name])], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    theirs = {object_key(o): normalized(o) for o in yaml.safe_load_all(out) if o}
    ours = {object_key(o): normalized(o) for o in objects}
    assert theirs.keys() == ours.keys()
    for key, obj in ours.items():
        assert obj == theirs[key], key

