"""The Kubernetes and KServe manifests in deploy/ are valid and agree with the server.

- Every Kubernetes object in deploy/k8s, as the base and each overlay render, validates offline
  against the Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields fail). The
  overlays are rendered here in Python: resources, strategic-merge patches (the subset of the
  Kubernetes merge keys the overlays use; anything else in a kustomization fails the render) and
  `images:`. Where a `kubectl` with kustomize is on the PATH, its rendering must equal ours.
  The ServiceMonitor (a Prometheus Operator CRD, not in those schemas) is checked structurally.
- The KServe manifests load into the KServe SDK's model classes (kserve.models plus the
  kubernetes client's for the core types), strictly: an unknown field fails.
- Ports, probe paths, settings and metric names are checked against the real server: a server
  started on the example registry answers the probe paths and exports the metrics the HPA and the
  Prometheus adapter rules use; every SERVING_* setting is a ServerConfig field and validates;
  the KServe runtime's args parse with `serving serve`'s own parser.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from serving.cli import build_parser
from serving.config import ServerConfig, load_server_config
from tests.conftest import RunningServer, run_server

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy/k8s"
KSERVE = ROOT / "deploy/kserve"
BUILDS = {"base": K8S / "base", "s3": K8S / "overlays/s3"}
ADAPTER_RULES = K8S / "prometheus-adapter-rules.yaml"
# The oldest Kubernetes release still commonly run, and the newest the package knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# Kinds that are CRDs, absent from the Kubernetes schemas: checked by their own tests below.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
SETTINGS = {f.name for f in fields(ServerConfig)}


# -- a small kustomize: resources, strategic-merge patches, images -----------------------------

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
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "patches", "images"}


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
    return objects


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    return obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else None


def yaml_files(directory: Path) -> set[Path]:
    return {*directory.rglob("*.yaml"), *directory.rglob("*.yml")}


@pytest.fixture(scope="module", params=sorted(BUILDS))
def build(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(BUILDS[request.param])


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [obj] = [o for o in objects if o["kind"] == kind]
    return obj


def server_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [c] = [c for c in pod_spec(only(objects, "Deployment"))["containers"] if c["name"] == "serving"]
    return c


def settings_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The environment the server container gets from the ConfigMap and its literal env."""
    container = server_container(objects)
    configmaps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def server_config(objects: list[dict[str, Any]]) -> ServerConfig:
    env = {k: v for k, v in settings_env(objects).items()
           if k.startswith("SERVING_") and k[len("SERVING_"):].lower() in SETTINGS}
    return load_server_config({}, env=env)


# -- schemas ------------------------------------------------------------------------------------


def standalone_manifests() -> list[Path]:
    """Manifests kept beside a kustomization but not in it (examples such as a Secret)."""
    covered = {ADAPTER_RULES}
    for directory in BUILDS.values():
        [kz] = load_docs(directory / "kustomization.yaml")
        covered.add(directory / "kustomization.yaml")
        covered |= {directory / r for r in kz.get("resources", [])}
        covered |= {directory / p["path"] for p in kz.get("patches", [])}
    return sorted(p for p in yaml_files(K8S) - covered)


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
    deployment = only(render(BUILDS["base"]), "Deployment")
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


# -- the Deployment and the server -------------------------------------------------------------


@pytest.fixture(scope="module")
def live_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[RunningServer]:
    with run_server(models_dir, tmp_path_factory.mktemp("deploy")) as s:
        yield s


@pytest.fixture(scope="module")
def exported(live_server: RunningServer) -> set[str]:
    """Sample names on /metrics after one inference request (counters appear once counted)."""
    body = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                     "data": [5.1, 3.5, 1.4, 0.2]}]})
    with httpx.Client(base_url=live_server.url, timeout=10) as c:
        assert c.post("/v2/models/iris/infer", content=body).status_code == 200
        text = c.get("/metrics").text
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def probes(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")
            if k in container}


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return number


def test_probe_paths_answer_on_a_real_server(build: tuple, live_server: RunningServer) -> None:
    _, objects = build
    container = server_container(objects)
    found = probes(container)
    assert found.keys() == {"startupProbe", "livenessProbe", "readinessProbe"}
    assert found["livenessProbe"]["path"] == "/v2/health/live"
    assert found["readinessProbe"]["path"] == "/v2/health/ready"
    with httpx.Client(base_url=live_server.url, timeout=5) as c:
        for kind, get in found.items():
            assert c.get(get["path"]).status_code == 200, (kind, get["path"])
            assert port_number(container, get["port"]) == server_config(objects).port


def test_readiness_takes_a_saturated_pod_out_fast(build: tuple) -> None:
    _, objects = build
    readiness = server_container(objects)["readinessProbe"]
    assert readiness["periodSeconds"] <= 5 and readiness["failureThreshold"] <= 2
    liveness = server_container(objects)["livenessProbe"]
    # Liveness must be more patient than readiness: a busy pod is taken out, not restarted.
    assert (liveness["periodSeconds"] * liveness["failureThreshold"]
            > readiness["periodSeconds"] * readiness["failureThreshold"])


def test_ports_agree(build: tuple) -> None:
    _, objects = build
    container = server_container(objects)
    config = server_config(objects)
    [http] = [p for p in container["ports"] if p["name"] == "http"]
    assert http["containerPort"] == config.port == ServerConfig().port
    assert config.host == "0.0.0.0"  # reachable from the kubelet and the Service
    [port] = only(objects, "Service")["spec"]["ports"]
    assert port["name"] == "http"
    assert port_number(container, port["targetPort"]) == config.port


def test_settings_are_real_server_settings(build: tuple) -> None:
    name, objects = build
    keys = {k[len("SERVING_"):].lower() for k in settings_env(objects) if k.startswith("SERVING_")}
    keys |= {e["name"][len("SERVING_"):].lower() for e in server_container(objects)["env"]
             if e["name"].startswith("SERVING_")}  # the admin token, from a Secret
    assert not keys - SETTINGS, f"{name}: not ServerConfig fields: {keys - SETTINGS}"
    config = server_config(objects)  # every value parses and validates
    assert config.worker_count() == 1


def test_container_runs_the_image_entrypoint_without_its_flags(build: tuple) -> None:
    """The image's CMD carries --registry and --port, which would outrank the ConfigMap's
    SERVING_* variables: the Deployment gives the command and no args."""
    _, objects = build
    dockerfile = (ROOT / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M).group(1))
    container = server_container(objects)
    assert container["command"] == entrypoint
    assert "args" not in container
    assert container["image"] == "serving:latest"


def test_security_context_matches_the_image(build: tuple) -> None:
    name, objects = build
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = int(re.search(r"useradd .*--uid (\d+) .*\b(\w+)$", dockerfile, re.M).group(1))
    assert re.search(r"^USER serving$", dockerfile, re.M)
    pod = pod_spec(only(objects, "Deployment"))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    container = server_container(objects)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # With a read-only root, whatever the server writes lives on a writable volume.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config, env = server_config(objects), settings_env(objects)
    writable = [env.get("SERVING_REGISTRY_CACHE", ""), "/tmp"]
    if "://" not in config.registry:
        writable.append(config.registry)
    for path in filter(None, writable):
        mount = next((m for p, m in mounts.items() if path == p or path.startswith(p + "/")),
                     None)
        assert mount is not None and not mount.get("readOnly"), f"{name}: {path} not writable"
        assert set(volumes[mount["name"]]) & {"emptyDir", "persistentVolumeClaim"}


def test_drain_fits_in_the_termination_grace_period(build: tuple) -> None:
    """preStop sleep + SERVING_DRAIN_GRACE + the server's in-flight limit < the grace period."""
    _, objects = build
    pod = pod_spec(only(objects, "Deployment"))
    command = server_container(objects)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    sleep = float(command[1])
    in_flight = 30.0  # uvicorn's timeout_graceful_shutdown in serving/http/server.py
    source = (ROOT / "serving/http/server.py").read_text()
    found = re.search(r"timeout_graceful_shutdown=(\d+(?:\.\d+)?)", source)
    if found:
        in_flight = float(found.group(1))
    total = sleep + server_config(objects).drain_grace + in_flight
    assert total < pod["terminationGracePeriodSeconds"], total


def test_pdb_hpa_service_and_monitor_select_the_pods(build: tuple) -> None:
    _, objects = build
    deployment = only(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return bool(selector) and selector.items() <= labels.items()

    assert selects(deployment["spec"]["selector"]["matchLabels"])
    assert selects(only(objects, "Service")["spec"]["selector"])
    assert selects(only(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    target = only(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    sa = pod_spec(deployment)["serviceAccountName"]
    assert ("ServiceAccount", sa) in {object_key(o) for o in objects}
    hpa = only(objects, "HorizontalPodAutoscaler")["spec"]
    pdb = only(objects, "PodDisruptionBudget")["spec"]
    assert hpa["minReplicas"] > pdb.get("maxUnavailable", 0)  # a drain never empties it


def test_service_monitor_scrapes_the_service(build: tuple, live_server: RunningServer) -> None:
    """Structural check of the CRD (no schema here): selects the Service by its labels, scrapes
    its named port, on a path the server answers with Prometheus text."""
    _, objects = build
    monitor = only(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    service = only(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items())
    port_names = {p["name"] for p in service["spec"]["ports"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "honorLabels"}
    assert endpoint["port"] in port_names
    with httpx.Client(base_url=live_server.url, timeout=5) as c:
        r = c.get(endpoint["path"])
    assert r.status_code == 200 and "serving_" in r.text
    assert r.headers["content-type"].startswith("text/plain")


def test_hpa_metrics_are_exported_and_served_by_the_adapter_rules(
        build: tuple, exported: set[str]) -> None:
    _, objects = build
    hpa = only(objects, "HorizontalPodAutoscaler")["spec"]
    resources = [m["resource"]["name"] for m in hpa["metrics"] if m["type"] == "Resource"]
    assert resources == ["cpu"]
    wanted = {m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"}
    assert wanted, "a Pods metric from the server"
    [doc] = load_docs(ADAPTER_RULES)
    served: dict[str, str] = {}
    for rule in doc["rules"]:
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)
        assert series in exported, f"the adapter rule reads {series}, which /metrics lacks"
        assert re.fullmatch(rule["name"]["matches"].strip("^$"), series)
        assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
        assert "<<.Series>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]
        served[rule["name"]["as"]] = series
    assert wanted <= served.keys(), f"no adapter rule serves {wanted - served.keys()}"
    assert {"serving_queue_depth", "serving_inflight_requests"} <= exported


def test_s3_overlay_reads_the_registry_from_s3() -> None:
    objects = render(BUILDS["s3"])
    env = settings_env(objects)
    assert server_config(objects).registry.startswith("s3://")
    assert float(env["SERVING_POLL"]) > 0
    pod = pod_spec(only(objects, "Deployment"))
    assert "initContainers" not in pod or not pod["initContainers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "registry" not in volumes and "emptyDir" in volumes["registry-cache"]
    container = server_container(objects)
    assert {"name": "serving-config"} in [s.get("configMapRef") for s in container["envFrom"]]
    secrets = [s["secretRef"] for s in container["envFrom"] if "secretRef" in s]
    [example] = [o for p in standalone_manifests() for o in load_docs(p) if o["kind"] == "Secret"]
    assert secrets == [{"name": example["metadata"]["name"], "optional": True}]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= example["stringData"].keys()
    sa = only(objects, "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


# -- KServe --------------------------------------------------------------------------------------

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
    docs = [d for p in sorted(yaml_files(KSERVE)) for d in load_docs(p)]
    return {d["kind"]: d for d in docs}


def test_kserve_manifests_load_into_the_sdk_models() -> None:
    from kserve import V1alpha1ClusterServingRuntime, V1beta1InferenceService

    docs = kserve_docs()
    assert docs.keys() == {"ClusterServingRuntime", "InferenceService"}
    runtime = to_model(docs["ClusterServingRuntime"], "V1alpha1ClusterServingRuntime")
    isvc = to_model(docs["InferenceService"], "V1beta1InferenceService")
    assert isinstance(runtime, V1alpha1ClusterServingRuntime)
    assert isinstance(isvc, V1beta1InferenceService)
    assert runtime.api_version == "serving.kserve.io/v1alpha1"
    assert isvc.api_version == "serving.kserve.io/v1beta1"

    spec = runtime.spec
    assert [(f.name, f.version, f.auto_select) for f in spec.supported_model_formats] == [
        ("onnx", "1", True)]
    assert spec.protocol_versions == ["v2"]
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


def test_kserve_broken_manifest_is_refused() -> None:
    doc = copy.deepcopy(kserve_docs()["InferenceService"])
    doc["spec"]["predictor"]["canaryTrafficPercnt"] = 10
    with pytest.raises(AssertionError, match="canaryTrafficPercnt"):
        to_model(doc, "V1beta1InferenceService")


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
