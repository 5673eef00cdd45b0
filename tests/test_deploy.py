"""The Kubernetes and KServe manifests in deploy/ are valid and agree with the server.

- Every Kubernetes object in deploy/k8s, as the base and each overlay render, validates offline
  against the Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields fail). The
  overlays are rendered here in Python: resources, strategic-merge patches (the subset of the
  Kubernetes merge keys the overlays use; anything else in a kustomization fails the render),
  `images:` and `replacements:` (one field copied between named objects). Where a `kubectl` with
  kustomize is on the PATH, its rendering must equal ours.
  The ServiceMonitor (a Prometheus Operator CRD, not in those schemas) is checked structurally.
- Selectors: no two Deployments' selectors overlap, the Service `serving` reaches every
  Deployment's pods, the ServiceMonitor scrapes through that Service alone. Where replicas share
  a registry (the s3 overlay) exactly one Deployment runs the rollout controller (one replica,
  Recreate, no HPA, the server's pod otherwise) and the Service `serving-admin` reaches only it.
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
# The Deployment and Service every build has (the HPA scales this Deployment), and the s3
# overlay's one-replica rollout controller and the Service in front of it alone.
SERVER = "serving"
CONTROLLER = "serving-rollout-controller"
ADMIN = "serving-admin"


# -- a small kustomize: resources, strategic-merge patches, images, replacements ---------------

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
    [port] = named(objects, "Service", SERVER)["spec"]["ports"]
    assert port["name"] == "http"
    assert port_number(container, port["targetPort"]) == config.port


def test_settings_are_real_server_settings(build: tuple) -> None:
    name, objects = build
    for deployment in deployments(objects):
        env = settings_env(objects, deployment)
        keys = {k[len("SERVING_"):].lower() for k in env if k.startswith("SERVING_")}
        keys |= {e["name"][len("SERVING_"):].lower()
                 for e in server_container(objects, deployment)["env"]
                 if e["name"].startswith("SERVING_")}  # the admin token, from a Secret
        unknown = keys - SETTINGS
        assert not unknown, f"{name} {deployment}: not ServerConfig fields: {unknown}"
        config = server_config(objects, deployment)  # every value parses and validates
        assert config.worker_count() == 1


def test_container_runs_the_image_entrypoint_without_its_flags(build: tuple) -> None:
    """The image's CMD carries --registry and --port, which would outrank the ConfigMap's
    SERVING_* variables: the Deployment gives the command and no args."""
    _, objects = build
    dockerfile = (ROOT / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M).group(1))
    for deployment in deployments(objects):
        container = server_container(objects, deployment)
        assert container["command"] == entrypoint
        assert "args" not in container
        assert container["image"] == "serving:latest"


def test_security_context_matches_the_image(build: tuple) -> None:
    name, objects = build
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = int(re.search(r"useradd .*--uid (\d+) .*\b(\w+)$", dockerfile, re.M).group(1))
    assert re.search(r"^USER serving$", dockerfile, re.M)
    for deployment in deployments(objects):
        check_security_context(objects, deployment, uid, f"{name} {deployment}")


def check_security_context(objects: list[dict[str, Any]], deployment: str, uid: int,
                           name: str) -> None:
    pod = pod_spec(named(objects, "Deployment", deployment))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    container = server_container(objects, deployment)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # With a read-only root, whatever the server writes lives on a writable volume.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config, env = server_config(objects, deployment), settings_env(objects, deployment)
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
    from serving.http.server import GRACEFUL_SHUTDOWN_S

    in_flight = float(GRACEFUL_SHUTDOWN_S)  # uvicorn's timeout_graceful_shutdown, server.py
    for deployment in deployments(objects):
        pod = pod_spec(named(objects, "Deployment", deployment))
        command = server_container(objects, deployment)["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        sleep = float(command[1])
        total = sleep + server_config(objects, deployment).drain_grace + in_flight
        assert total < pod["terminationGracePeriodSeconds"], (deployment, total)


def test_pdb_hpa_service_and_monitor_select_the_pods(build: tuple) -> None:
    _, objects = build
    names = deployments(objects)
    assert SERVER in names
    keys = {object_key(o) for o in objects}
    for deployment in names:
        obj = named(objects, "Deployment", deployment)
        labels = pod_labels(objects, deployment)
        selector = match_labels(obj["spec"]["selector"])
        assert selects(selector, labels), deployment
        # No two Deployments may claim the same pods: neither selector matches the other's.
        for other in names:
            if other != deployment:
                assert not selects(selector, pod_labels(objects, other)), (deployment, other)
        for spread in pod_spec(obj).get("topologySpreadConstraints", []):
            assert selects(match_labels(spread["labelSelector"]), labels), deployment
        assert ("ServiceAccount", pod_spec(obj)["serviceAccountName"]) in keys
    # The Service `serving` and the PDB reach every serving pod, the rollout controller's too.
    service = named(objects, "Service", SERVER)
    pdb = only(objects, "PodDisruptionBudget")["spec"]
    for deployment in names:
        assert selects(service["spec"]["selector"], pod_labels(objects, deployment)), deployment
        assert selects(match_labels(pdb["selector"]), pod_labels(objects, deployment)), deployment
    target = only(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", SERVER)
    hpa = only(objects, "HorizontalPodAutoscaler")["spec"]
    assert hpa["minReplicas"] > pdb.get("maxUnavailable", 0)  # a drain never empties it
    # maxUnavailable, never minAvailable: a one-replica Deployment it covers can still be drained.
    assert "minAvailable" not in pdb


def test_service_monitor_scrapes_the_service(build: tuple, live_server: RunningServer) -> None:
    """Structural check of the CRD (no schema here): selects the Service by its labels, scrapes
    its named port, on a path the server answers with Prometheus text."""
    _, objects = build
    monitor = only(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    # Through the Service `serving` alone, which reaches every pod: a pod behind two scraped
    # Services (serving-admin's) would be scraped twice and count twice in the adapter's sums.
    selector = match_labels(monitor["spec"]["selector"])
    scraped = [o["metadata"]["name"] for o in objects
               if o["kind"] == "Service" and selects(selector, o["metadata"]["labels"])]
    assert scraped == [SERVER]
    service = named(objects, "Service", SERVER)
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
    [example] = [o for p in standalone_manifests() for o in load_docs(p) if o["kind"] == "Secret"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= example["stringData"].keys()
    for deployment in deployments(objects):
        env = settings_env(objects, deployment)
        assert server_config(objects, deployment).registry.startswith("s3://")
        assert float(env["SERVING_POLL"]) > 0  # routing written by the controller reaches all
        pod = pod_spec(named(objects, "Deployment", deployment))
        assert "initContainers" not in pod or not pod["initContainers"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "registry" not in volumes and "emptyDir" in volumes["registry-cache"]
        container = server_container(objects, deployment)
        assert {"name": "serving-config"} in [s.get("configMapRef") for s in container["envFrom"]]
        secrets = [s["secretRef"] for s in container["envFrom"] if "secretRef" in s]
        assert secrets == [{"name": example["metadata"]["name"], "optional": True}]
    sa = only(objects, "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def test_exactly_one_rollout_controller_where_replicas_share_a_registry(build: tuple) -> None:
    """The server's own rollouts need one controller, writing routing state to a registry that
    every replica reads. The base gives each pod its own registry copy: no controller at all."""
    name, objects = build
    controllers = rollout_controllers(objects)
    if "://" not in server_config(objects).registry:
        assert controllers == [], name
        return
    assert controllers == [CONTROLLER], name
    deployment = named(objects, "Deployment", CONTROLLER)["spec"]
    assert deployment["replicas"] == 1
    assert deployment["strategy"] == {"type": "Recreate"}  # never two during an update
    targets = {o["spec"]["scaleTargetRef"]["name"] for o in objects
               if o["kind"] == "HorizontalPodAutoscaler"}
    assert CONTROLLER not in targets
    # The ConfigMap every pod reads says false; the controller's own env entry outranks it.
    assert settings_env(objects, SERVER)["SERVING_ROLLOUT_CONTROLLER"] == "false"
    env = server_container(objects, CONTROLLER)["env"]
    assert {"name": "SERVING_ROLLOUT_CONTROLLER", "value": "true"} in env


def test_s3_rollout_controller_runs_the_servers_pod() -> None:
    """A full manifest, not a patch (kustomize cannot copy a resource): it must stay the server's
    pod, differing only in its `component` label and SERVING_ROLLOUT_CONTROLLER."""
    objects = render(BUILDS["s3"])
    server, controller = (
        copy.deepcopy(named(objects, "Deployment", d)["spec"]) for d in (SERVER, CONTROLLER))
    for spec in (server, controller):
        template = spec["template"]
        template["metadata"]["labels"].pop("app.kubernetes.io/component")
        for c in template["spec"]["containers"]:
            c["env"] = [e for e in c.get("env", []) if e["name"] != "SERVING_ROLLOUT_CONTROLLER"]
        if not template["spec"].get("initContainers"):  # the overlay's patch leaves []
            template["spec"].pop("initContainers", None)
    assert normalized(controller["template"]) == normalized(server["template"])
    assert controller["revisionHistoryLimit"] == server["revisionHistoryLimit"]


def test_s3_admin_service_reaches_only_the_rollout_controller() -> None:
    """`serving rollout ... --url http://serving-admin:8000`: the other replicas answer 503."""
    objects = render(BUILDS["s3"])
    admin = named(objects, "Service", ADMIN)["spec"]
    reached = [d for d in deployments(objects)
               if selects(admin["selector"], pod_labels(objects, d))]
    assert reached == rollout_controllers(objects) == [CONTROLLER]
    assert admin.get("type", "ClusterIP") == "ClusterIP"  # internal: admin endpoints behind it
    [port] = admin["ports"]
    assert port == named(objects, "Service", SERVER)["spec"]["ports"][0]
    container = server_container(objects, CONTROLLER)
    assert port_number(container, port["targetPort"]) == server_config(objects, CONTROLLER).port
    # The admin token reaches the controller from the Secret, as it does every replica.
    [token] = [e for e in container["env"] if e["name"] == "SERVING_ADMIN_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"]["key"] == "token"


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
