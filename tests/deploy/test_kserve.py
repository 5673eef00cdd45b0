"""The KServe manifests load into the KServe SDK's model classes (kserve.models plus the
kubernetes client's for the core types), strictly: an unknown field fails; the runtime's args
parse with `serving serve`'s own parser and run a real server."""

from __future__ import annotations

import copy
import re
from typing import Any

import httpx
import pytest

from serving.cli import build_parser
from serving.config import load_server_config
from tests.conftest import RunningServer
from tests.deploy.kustomize import (
    load_docs,
)
from tests.deploy.objects import (
    KSERVE,
    SETTINGS,
    yaml_files,
)

PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "bool": (bool,), "float": (int, float), "datetime": (str,),
    "date": (str,),
}


def to_model(data: Any, klass: str) -> Any:
    """`data` as an instance of the SDK class named `klass` (kserve.models first, then the
    kubernetes client's), refusing fields the class does not have, as the cluster's CRD
    schemas would. The generated constructors check required fields and enums."""
    import kserve.models
    import kubernetes.client.models

    if data is None:
        return None
    # The generators spell containers `list[X]` / `dict(str, X)` (kserve) or `List[X]` /
    # `Dict[str, X]` (recent kubernetes clients).
    if m := re.fullmatch(r"[lL]ist\[(.*)\]", klass):
        assert isinstance(data, list), (klass, data)
        return [to_model(x, m.group(1)) for x in data]
    if m := re.fullmatch(r"dict\(([^,]*), (.*)\)|Dict\[([^,]*), (.*)\]", klass):
        assert isinstance(data, dict), (klass, data)
        value_klass = m.group(2) or m.group(4)
        return {k: to_model(v, value_klass) for k, v in data.items()}
    if klass == "object":
        return data
    if klass in PRIMITIVES:
        ok = isinstance(data, PRIMITIVES[klass]) and (klass == "bool") == isinstance(data, bool)
        assert ok, f"{data!r} is not a {klass}"
        return data
    cls = getattr(kserve.models, klass, None) or getattr(kubernetes.client.models, klass)
    assert isinstance(data, dict), (klass, data)
    attrs = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    unknown = set(data) - set(attrs)
    assert not unknown, f"{klass} has no field {sorted(unknown)}"
    return cls(**{attrs[k]: to_model(v, cls.openapi_types[attrs[k]]) for k, v in data.items()})


def kserve_docs() -> dict[str, dict[str, Any]]:
    """The runtime by kind, the InferenceServices by name (the HTTP one also by kind)."""
    docs = [d for p in sorted(yaml_files(KSERVE)) for d in load_docs(p)]
    by_kind = {d["kind"]: d for d in docs if d["metadata"]["name"] in ("serving-onnx", "iris")}
    return {**by_kind, **{d["metadata"]["name"]: d for d in docs}}


def test_kserve_manifests_load_into_the_sdk_models() -> None:
    from kserve import V1alpha1ClusterServingRuntime, V1beta1InferenceService

    docs = kserve_docs()
    assert docs.keys() == {"ClusterServingRuntime", "InferenceService", "serving-onnx", "iris",
                           "iris-grpc"}
    runtime = to_model(docs["ClusterServingRuntime"], "V1alpha1ClusterServingRuntime")
    isvc = to_model(docs["InferenceService"], "V1beta1InferenceService")
    assert isinstance(runtime, V1alpha1ClusterServingRuntime)
    assert isinstance(isvc, V1beta1InferenceService)
    assert runtime.api_version == "serving.kserve.io/v1alpha1"
    assert isvc.api_version == "serving.kserve.io/v1beta1"

    spec = runtime.spec
    assert [(f.name, f.version, f.auto_select) for f in spec.supported_model_formats] == [
        ("onnx", "1", True)]
    assert spec.protocol_versions == ["v2", "grpc-v2"]
    [container] = spec.containers
    assert container.name == "kserve-container"  # the container KServe wires the model into
    assert container.image == "serving:latest"

    predictor = isvc.spec.predictor
    assert 0 < predictor.canary_traffic_percent < 100
    model = predictor.model
    assert (model.model_format.name, model.model_format.version) == ("onnx", "1")
    assert model.runtime == runtime.metadata.name
    assert model.protocol_version in spec.protocol_versions
    assert re.match(r"(s3|gs|https?|pvc)://", model.storage_uri)
    # The model's name in requests is its folder in the registry: keep the two the same.
    assert isvc.metadata.name == "iris"


def test_kserve_grpc_inference_service_names_the_runtimes_grpc_port() -> None:
    docs = kserve_docs()
    runtime = to_model(docs["ClusterServingRuntime"], "V1alpha1ClusterServingRuntime")
    isvc = to_model(docs["iris-grpc"], "V1beta1InferenceService")
    model = isvc.spec.predictor.model
    assert model.protocol_version == "grpc-v2" in runtime.spec.protocol_versions
    assert model.runtime == runtime.metadata.name
    [port] = model.ports
    assert port.name == "h2c"  # Knative's name for a cleartext HTTP/2 (gRPC) port
    [container] = runtime.spec.containers
    args = build_parser().parse_args(["serve", *container.args])
    config = load_server_config({f: getattr(args, f) for f in SETTINGS}, env={})
    assert port.container_port == config.grpc_port != config.port


def test_kserve_broken_manifest_is_refused() -> None:
    doc = copy.deepcopy(kserve_docs()["InferenceService"])
    doc["spec"]["predictor"]["canaryTrafficPercnt"] = 10
    with pytest.raises(AssertionError, match="canaryTrafficPercnt"):
        to_model(doc, "V1beta1InferenceService")


@pytest.mark.e2e
def test_kserve_runtime_runs_the_server_on_the_model_mount(live_server: RunningServer) -> None:
    doc = kserve_docs()["ClusterServingRuntime"]
    [container] = doc["spec"]["containers"]
    assert container["command"] == ["serving", "serve"]
    args = build_parser().parse_args(["serve", *container["args"]])
    config = load_server_config({f: getattr(args, f) for f in SETTINGS}, env={})
    assert config.registry == "/mnt/models"  # where KServe's storage initializer puts storageUri
    assert config.host == "0.0.0.0"
    assert config.rollout_controller is False  # KServe owns revisions and traffic here
    [port] = container["ports"]
    assert port["containerPort"] == config.port
    annotations = doc["spec"]["annotations"]
    assert int(annotations["prometheus.kserve.io/port"]) == config.port
    with httpx.Client(base_url=live_server.url, timeout=5) as c:
        assert c.get(annotations["prometheus.kserve.io/path"]).status_code == 200
        for probe in ("readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            assert get["port"] == config.port
            assert c.get(get["path"]).status_code == 200, get["path"]


def test_kserve_runtime_requires_the_admin_token_secret() -> None:
    [container] = kserve_docs()["ClusterServingRuntime"]["spec"]["containers"]
    [token] = [e for e in container["env"] if e["name"] == "SERVING_ADMIN_TOKEN"]
    ref = token["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("serving-admin", "token")
    assert ref.get("optional", False) is False
    assert "--admin-open" not in container["args"]
