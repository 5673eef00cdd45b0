"""The Kubernetes manifests agree with the server.

- Selectors: no two Deployments' selectors overlap, the Service `serving` reaches every
  Deployment's pods, the ServiceMonitor scrapes through that Service alone. Where replicas share
  a registry (the s3 overlay) exactly one Deployment runs the rollout controller (one replica,
  Recreate, no HPA, the server's pod otherwise) and the Service `serving-admin` reaches only it.
- Ports, probe paths, settings and metric names are checked against the real server: a server
  started on the example registry answers the probe paths and exports the metrics the HPA and the
  Prometheus adapter rules use; every SERVING_* setting is a ServerConfig field and validates.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import httpx
import pytest

from serving.config import ServerConfig
from serving.lifecycle.prometheus import FleetMetrics
from tests.conftest import RunningServer
from tests.deploy.kustomize import (
    load_docs,
    normalized,
    object_key,
    pod_spec,
    render,
)
from tests.deploy.objects import (
    ADAPTER_RULES,
    ADMIN,
    BUILDS,
    CONTROLLER,
    ROOT,
    SERVER,
    SETTINGS,
    deployments,
    match_labels,
    named,
    only,
    pod_labels,
    port_number,
    probes,
    rollout_controllers,
    selects,
    server_config,
    server_container,
    settings_env,
    standalone_manifests,
)


@pytest.mark.e2e
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
    port, grpc = named(objects, "Service", SERVER)["spec"]["ports"]
    assert port["name"] == "http"
    assert port_number(container, port["targetPort"]) == config.port
    assert grpc["name"] == "grpc"
    grpc_port = port_number(container, grpc["targetPort"])
    assert grpc_port == config.grpc_port == ServerConfig().grpc_port


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


@pytest.mark.e2e
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


@pytest.mark.e2e
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


def test_s3_rollout_controller_judges_the_fleet_from_prometheus() -> None:
    """The controller's numbers come from Prometheus, summed over the replicas that the
    ServiceMonitor scrapes: their `job` label (the Service's name; no jobLabel override) is the
    job the controller asks Prometheus for."""
    objects = render(BUILDS["s3"])
    config = server_config(objects, CONTROLLER)
    assert config.rollout_metrics == "prometheus"
    assert FleetMetrics("prometheus", config.prometheus_url)  # a valid http(s) URL
    monitor = only(objects, "ServiceMonitor")["spec"]
    assert "jobLabel" not in monitor
    [service] = [o["metadata"]["name"] for o in objects if o["kind"] == "Service"
                 and selects(monitor["selector"]["matchLabels"], o["metadata"]["labels"])]
    assert service == FleetMetrics().job


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



def admin_token_source(container: dict[str, Any]) -> dict[str, Any]:
    [token] = [e for e in container.get("env", []) if e["name"] == "SERVING_ADMIN_TOKEN"]
    return token["valueFrom"]["secretKeyRef"]


def test_every_server_requires_the_admin_token_secret(build: tuple) -> None:
    """Without the Secret a pod does not start, rather than serving with model control that
    answers 403 (or, worse, open)."""
    _, objects = build
    for deployment in deployments(objects):
        ref = admin_token_source(server_container(objects, deployment))
        assert (ref["name"], ref["key"]) == (ADMIN, "token")
        assert ref.get("optional", False) is False, deployment
        assert not server_config(objects, deployment).admin_open
