"""The Open Inference Protocol over gRPC against a real server, through clients nobody here
wrote: tritonclient.grpc, KServe's SDK and perf_analyzer. The client code runs in a spawned
child process (see tests/e2e/grpc_checks.py for why); what the server counts is read here."""

from __future__ import annotations

import multiprocessing
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.registry.routing_state import RoutingState, write_routing
from tests.conftest import RunningServer, run_server, wait_for
from tests.e2e import grpc_checks as checks
from tests.e2e.models import ONNX_TYPES, identity_model, iris_like, publish

pytestmark = pytest.mark.e2e

TOKEN = "grpc-secret"
LIMIT = 256 * 1024  # --grpc-max-message-bytes of the module's server
SLOW_TOML = """[batching]
max_batch_size = 64
max_queue_size = 4
workers = 1
inline_max_us = 0
"""
BATCHY_TOML = """[batching]
max_batch_size = 64
max_queue_delay_us = 20000
inline_max_us = 0
"""
SPLIT_TOML = """[versions]
policy = "all"

[routing]
auto_promote = false
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def registry(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grpc") / "registry"
    shutil.copytree(models_dir, root)
    publish(root, "typed", identity_model([d for d in ONNX_TYPES if d != "FP16"]))
    publish(root, "slow", iris_like("slow"), SLOW_TOML)
    iris = (root / "iris" / "1" / "model.onnx").read_bytes()
    publish(root, "batchy", iris, BATCHY_TOML)
    publish(root, "split", iris, SPLIT_TOML)
    publish(root, "split", iris)
    write_routing(root, "split", RoutingState(primary=1, canary=2, canary_weight=50.0))
    return root


class GrpcServer:
    def __init__(self, http: RunningServer, address: str) -> None:
        self.http = http
        self.address = address


@pytest.fixture(scope="module")
def server(registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServer]:
    port = free_port()
    with run_server(registry, tmp_path_factory.mktemp("grpc-server"), "--grpc-port", str(port),
                    "--grpc-max-message-bytes", str(LIMIT), "--admin-token", TOKEN,
                    "--access-log") as s:
        yield GrpcServer(s, f"127.0.0.1:{port}")


def _child() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


triton = pytest.fixture(scope="module")(_child)  # imports tritonclient.grpc
kserve = pytest.fixture(scope="module")(_child)  # imports KServe's SDK (a pool of its own)


def call(pool: ProcessPoolExecutor, fn: Callable[..., Any], *args: Any) -> Any:
    return pool.submit(fn, *args).result(timeout=240)


def metric(server: GrpcServer, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.http.url + "/metrics", timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_every_datatype_in_raw_contents(server: GrpcServer, triton: ProcessPoolExecutor) -> None:
    call(triton, checks.every_datatype_raw, server.address)


def test_every_datatype_in_typed_contents(server: GrpcServer, triton: ProcessPoolExecutor) -> None:
    call(triton, checks.every_datatype_typed, server.address)
    call(triton, checks.iris_typed_matches_raw, server.address)


def test_outputs_selection_and_classification(
    server: GrpcServer, triton: ProcessPoolExecutor
) -> None:
    call(triton, checks.outputs_and_classification, server.address)


def test_metadata_config_and_statistics(server: GrpcServer, triton: ProcessPoolExecutor) -> None:
    call(triton, checks.metadata_config_statistics, server.address)


def test_repository_calls_need_the_admin_token(
    server: GrpcServer, triton: ProcessPoolExecutor
) -> None:
    call(triton, checks.repository, server.address, TOKEN)


def test_bad_requests_get_their_codes(server: GrpcServer, triton: ProcessPoolExecutor) -> None:
    call(triton, checks.bad_requests, server.address)
    call(triton, checks.too_large, server.address, LIMIT)
    assert metric(server, "serving_protocol_requests_total", protocol="grpc",
                  outcome="client_error") >= 10
    assert '"protocol":"grpc"' in server.http.log()  # the access log covers gRPC


def test_a_full_queue_is_resource_exhausted(
    server: GrpcServer, triton: ProcessPoolExecutor
) -> None:
    codes = call(triton, checks.flood, server.address, "slow", 24, 16)
    assert "OK" in codes, codes
    full = [c for c in codes if c.startswith("RESOURCE_EXHAUSTED:")]
    assert full and all("queue" in c for c in full), codes
    assert set(codes) <= {"OK", *full}, codes


def test_the_grpc_deadline_is_the_requests_timeout(
    server: GrpcServer, triton: ProcessPoolExecutor
) -> None:
    """A request whose deadline passes while it waits behind long batches is dropped by the
    server, never run: the slow model's rows count only the long batches."""
    rows = {"model": "slow", "version": "1"}
    outcomes = {"model": "slow", "protocol": "grpc"}

    def dropped() -> float:
        return sum(metric(server, "serving_protocol_requests_total", outcome=o, **outcomes)
                   for o in ("timeout", "cancelled"))

    wait_for(lambda: metric(server, "serving_queue_depth", **rows) == 0)
    before, dropped_before = metric(server, "serving_batch_rows_total", **rows), dropped()
    long, short, took = call(triton, checks.deadline, server.address)
    assert long == ["OK", "OK"] and short == "DEADLINE_EXCEEDED", (long, short)
    assert took < 5, took
    wait_for(lambda: dropped() > dropped_before)
    assert metric(server, "serving_batch_rows_total", **rows) == before + 128


def call_async(pool: ProcessPoolExecutor, fn: Callable[..., Any], *args: Any) -> Any:
    """A call on a pool of its own (the module's child stays free for the next call)."""
    own = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    future = own.submit(fn, *args)
    future.add_done_callback(lambda _f: own.shutdown(wait=False))
    return future


def test_http_and_grpc_requests_share_batches(
    server: GrpcServer, triton: ProcessPoolExecutor
) -> None:
    """One gRPC client and one HTTP client, each with one one-row request in flight at a time,
    against a model that waits 20 ms for a fuller batch: a batch of two holds one of each."""
    grpc_sizes = call_async(triton, checks.batch_sizes, server.address, "batchy", 3.0)
    http_sizes: list[int] = []
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                        "data": [5.1, 3.5, 1.4, 0.2]}]}
    with httpx.Client(base_url=server.http.url, timeout=30) as c:
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            r = c.post("/v2/models/batchy/infer", json=body)
            assert r.status_code == 200, r.text
            http_sizes.append(r.json()["parameters"]["batch_size"])
        stats = c.get("/v2/models/batchy/stats").json()["model_stats"][0]["batch_stats"]
    grpc_seen = grpc_sizes.result(timeout=60)
    assert 2 in http_sizes and 2 in grpc_seen, (http_sizes, grpc_seen)
    assert any(b["batch_size"] == 2 for b in stats), stats
    for protocol, sizes in (("http", http_sizes), ("grpc", grpc_seen)):
        assert metric(server, "serving_protocol_requests_total", model="batchy",
                      protocol=protocol, outcome="success") == len(sizes)


def test_grpc_routes_by_the_same_key_as_http(
    server: GrpcServer, triton: ProcessPoolExecutor
) -> None:
    """A canary at 50%: each routing key reaches the same version over gRPC (metadata, or the
    request id) as over HTTP (the header); both versions answer some keys."""
    keys = [f"user-{i}" for i in range(40)]
    by_metadata = call(triton, checks.versions_by_key, server.address, "split", keys, False)
    by_id = call(triton, checks.versions_by_key, server.address, "split", keys, True)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                        "data": [5.1, 3.5, 1.4, 0.2]}]}
    with httpx.Client(base_url=server.http.url, timeout=30) as c:
        by_http = [c.post("/v2/models/split/infer", json=body, headers={"x-routing-key": k})
                   .headers["x-model-version"] for k in keys]
    assert by_metadata == by_http == by_id
    assert set(by_http) == {"1", "2"}, by_http


def test_kserve_sdk_grpc_client(server: GrpcServer, kserve: ProcessPoolExecutor) -> None:
    call(kserve, checks.kserve_client, server.address)


def test_perf_analyzer_over_grpc_runs_clean(server: GrpcServer) -> None:
    """perf_analyzer -i grpc through benchmarks/perf_analyzer.sh (PROTOCOL=grpc)."""
    from tests.e2e.test_statistics import run_perf_analyzer

    out = run_perf_analyzer(server.address, PROTOCOL="grpc")
    assert "Successful request count" in out, out  # server-side statistics over gRPC


def test_workers_share_the_grpc_port(
    registry: Path, tmp_path: Path, triton: ProcessPoolExecutor
) -> None:
    """Two worker processes on one gRPC port (SO_REUSEPORT); a model unloaded over gRPC is
    unloaded in every worker; SIGTERM drains and exits 0."""
    port = free_port()
    with run_server(registry, tmp_path, "--workers", "2", "--grpc-port", str(port),
                    "--admin-token", TOKEN) as s:
        address = f"127.0.0.1:{port}"
        codes = call(triton, checks.flood, address, "iris", 32, 1)
        assert set(codes) == {"OK"}, codes
        call(triton, checks.repository, address, TOKEN)
        assert s.stop() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_grpc_port_in_use_fails_the_start(registry: Path, tmp_path: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"cannot serve gRPC on 127.0.0.1:{port}"), \
                run_server(registry, tmp_path, "--grpc-port", str(port), "--workers", workers):
            pass


def test_readiness_over_grpc_turns_false_while_draining(
    registry: Path, tmp_path: Path, triton: ProcessPoolExecutor
) -> None:
    port = free_port()
    with run_server(registry, tmp_path, "--grpc-port", str(port),
                    env={"SERVING_DRAIN_GRACE": "30"}) as s:
        address = f"127.0.0.1:{port}"
        assert call(triton, checks.server_ready, address) is True
        s.proc.send_signal(15)
        wait_for(lambda: call(triton, checks.server_ready, address) is False)
        # still serving during the grace period
        assert call(triton, checks.flood, address, "iris", 2, 1) == ["OK", "OK"]
        s.proc.send_signal(15)  # a second SIGTERM ends the grace period
        assert s.proc.wait(30) == 0
