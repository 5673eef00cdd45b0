"""OpenTelemetry tracing end to end: a real server with `--tracing` exports through the real OTLP
exporter to a receiver on loopback (tests/e2e/otlp.py), which decodes each export."""

from __future__ import annotations

import asyncio
import itertools
import random
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, run_server, wait_for
from tests.e2e.otlp import OtlpReceiver, Span

IRIS = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                    "data": [5.1, 3.5, 1.4, 0.2]}]}
SERVER, INTERNAL = 2, 1  # opentelemetry.proto Span.SpanKind
PHASES = ("decode", "queue", "inference", "encode")


def otel_env(receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms: export promptly
        "OTEL_SERVICE_NAME": "serving-test",
        **extra,
    }


def traceparent(sampled: bool = True) -> tuple[str, str, str]:
    """(header, trace id, span id) of a client span."""
    trace_id, span_id = f"{random.getrandbits(128):032x}", f"{random.getrandbits(64):016x}"
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}", trace_id, span_id


def of_trace(spans: list[Span], trace_id: str) -> dict[str, Span]:
    return {s.name: s for s in spans if s.trace_id == trace_id}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


@pytest.fixture
def traced(
    registry_copy: Path, tmp_path: Path, receiver: OtlpReceiver
) -> Iterator[RunningServer]:
    """A traced server whose iris waits up to 20 ms for company, so concurrent requests batch."""
    toml = registry_copy / "iris" / "model.toml"
    text = toml.read_text() if toml.exists() else ""
    text = re.sub(r"(?m)^max_queue_delay_us.*\n", "", text)
    text = text.replace("[batching]\n", "[batching]\nmax_queue_delay_us = 20000\n", 1)
    if "[batching]" not in text:
        text += "\n[batching]\nmax_queue_delay_us = 20000\n"
    toml.write_text(text)
    with run_server(registry_copy, tmp_path, "--tracing", env=otel_env(receiver)) as server:
        yield server


def test_request_span_parent_children_and_attributes(
    traced: RunningServer, receiver: OtlpReceiver
) -> None:
    header, trace_id, client_span = traceparent()
    r = httpx.post(f"{traced.url}/v2/models/iris/infer", json={**IRIS, "id": "req-7"},
                   headers={"traceparent": header, "tracestate": "vendor=abc"})
    assert r.status_code == 200
    wait_for(lambda: {"POST /v2/models/{model}/infer", *PHASES}
             <= set(of_trace(receiver.snapshot(), trace_id)), timeout=30)
    spans = of_trace(receiver.snapshot(), trace_id)
    root = spans["POST /v2/models/{model}/infer"]
    assert root.parent_span_id == client_span  # the client's traceparent is the parent
    assert root.kind == SERVER and root.status_code == 0
    port = int(traced.url.rsplit(":", 1)[1])
    assert root.attributes == {
        "http.request.method": "POST", "url.path": "/v2/models/iris/infer",
        "url.scheme": "http", "http.route": "/v2/models/{model}/infer",
        "http.response.status_code": 200, "server.address": "127.0.0.1", "server.port": port,
        "client.address": "127.0.0.1", "network.peer.address": "127.0.0.1",
        "network.peer.port": root.attributes["network.peer.port"],
        "network.protocol.version": "1.1",
        "user_agent.original": f"python-httpx/{httpx.__version__}",
        "serving.model.name": "iris", "serving.model.version": "1", "serving.route": "primary",
        "serving.request.id": "req-7", "serving.batch.size": 1, "serving.protocol": "v2",
    }
    assert root.resource["service.name"] == "serving-test"
    order = [spans[n] for n in PHASES]
    for name in PHASES:  # children of the request span, inside it, in order
        child = spans[name]
        assert child.parent_span_id == root.span_id and child.kind == INTERNAL
        assert root.start_ns <= child.start_ns <= child.end_ns <= root.end_ns, [
            (s.name, s.start_ns - root.start_ns, s.end_ns - root.start_ns) for s in order]
    for before, after in itertools.pairwise(order):
        assert before.end_ns <= after.start_ns + 1_000  # ns rounding between clocks
    inference = spans["inference"]
    assert inference.attributes == {"serving.batch.size": 1}
    [(batch_trace, batch_span)] = inference.links
    wait_for(lambda: any(s.span_id == batch_span for s in receiver.snapshot()), timeout=30)
    batch = next(s for s in receiver.snapshot() if s.span_id == batch_span)
    assert batch.name == "batch" and batch.trace_id == batch_trace != trace_id
    assert batch.attributes == {"serving.model.name": "iris", "serving.model.version": "1",
                                "serving.batch.size": 1, "serving.batch.requests": 1}
    assert batch.links == [(trace_id, root.span_id)]


def test_concurrent_requests_link_their_shared_batch(
    traced: RunningServer, receiver: OtlpReceiver
) -> None:
    async def burst(n: int) -> list[str]:
        ids = [traceparent() for _ in range(n)]
        async with httpx.AsyncClient(base_url=traced.url, timeout=30) as c:
            rs = await asyncio.gather(*(
                c.post("/v2/models/iris/infer", json=IRIS, headers={"traceparent": h})
                for h, _, _ in ids))
        assert all(r.status_code == 200 for r in rs)
        return [t for _, t, _ in ids]

    trace_ids = asyncio.run(burst(8))

    def inference_links() -> dict[str, tuple[str, str]]:
        return {s.trace_id: s.links[0] for s in receiver.snapshot()
                if s.name == "inference" and s.trace_id in trace_ids}

    wait_for(lambda: len(inference_links()) == len(trace_ids), timeout=30)
    by_batch: dict[tuple[str, str], list[str]] = {}
    for t, link in inference_links().items():
        by_batch.setdefault(link, []).append(t)
    shared = max(by_batch.values(), key=len)
    assert len(shared) >= 2, by_batch  # the 20 ms queue delay gathers them
    link = next(k for k, v in by_batch.items() if v is shared)
    wait_for(lambda: any(s.span_id == link[1] for s in receiver.snapshot()), timeout=30)
    spans = receiver.snapshot()
    batch = next(s for s in spans if s.span_id == link[1])
    assert batch.attributes["serving.batch.size"] == batch.attributes["serving.batch.requests"]
    assert batch.attributes["serving.batch.size"] >= len(shared)
    roots = {s.trace_id: s.span_id for s in spans if s.kind == SERVER}
    assert sorted(batch.links) == sorted((t, roots[t]) for t in shared)
    for s in spans:
        if s.name == "inference" and s.trace_id in shared:
            assert s.attributes["serving.batch.size"] == batch.attributes["serving.batch.size"]


def test_errors_are_spans_too(traced: RunningServer, receiver: OtlpReceiver) -> None:
    bad_header, bad_trace, _ = traceparent()
    r = httpx.post(f"{traced.url}/v2/models/iris/versions/1/infer", content=b"{not json",
                   headers={"traceparent": bad_header})
    assert r.status_code == 400
    v1_header, v1_trace, _ = traceparent()
    r = httpx.post(f"{traced.url}/v1/models/iris:predict", json={"instances": [[1, 2, 3, 4]]},
                   headers={"traceparent": v1_header})
    assert r.status_code == 200
    wait_for(lambda: bool(of_trace(receiver.snapshot(), bad_trace))
             and "encode" in of_trace(receiver.snapshot(), v1_trace), timeout=30)
    [bad] = of_trace(receiver.snapshot(), bad_trace).values()  # no phases: it never queued
    assert bad.name == "POST /v2/models/{model}/versions/{version}/infer"
    assert bad.attributes["http.response.status_code"] == 400
    assert bad.status_code == 0 and "error.type" not in bad.attributes  # 4xx: the client's
    v1 = of_trace(receiver.snapshot(), v1_trace)
    assert set(v1) == {"POST /v1/models/{model}:predict", *PHASES}
    assert v1["POST /v1/models/{model}:predict"].attributes["serving.protocol"] == "v1"


def test_sampling_ratio_and_parent_decisions(
    models_dir: Path, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    env = otel_env(receiver, OTEL_TRACES_SAMPLER="parentbased_traceidratio",
                   OTEL_TRACES_SAMPLER_ARG="0.25")
    sampled = [traceparent(True) for _ in range(20)]
    unsampled = [traceparent(False) for _ in range(20)]
    with run_server(models_dir, tmp_path, "--tracing", env=env) as server, \
            httpx.Client(base_url=server.url) as c:
        for _ in range(400):
            assert c.post("/v2/models/iris/infer", json=IRIS).status_code == 200
        for h, _, _ in sampled + unsampled:
            r = c.post("/v2/models/iris/infer", json=IRIS, headers={"traceparent": h})
            assert r.status_code == 200
        assert server.stop() == 0  # shutdown exports what is buffered
    roots = [s for s in receiver.snapshot() if s.kind == SERVER]
    traced_ids = {s.trace_id for s in roots}
    assert {t for _, t, _ in sampled} <= traced_ids  # a sampled parent is always followed
    assert not {t for _, t, _ in unsampled} & traced_ids  # an unsampled one never
    own = len(roots) - len(sampled)
    assert 55 <= own <= 145, own  # 400 x 0.25 = 100; 5 standard deviations is +-43


@pytest.mark.parametrize("args, extra", [
    pytest.param((), {}, id="default"),
    pytest.param(("--tracing",), {"OTEL_SDK_DISABLED": "true"}, id="otel-sdk-disabled"),
])
def test_off_exports_nothing(
    models_dir: Path, tmp_path: Path, receiver: OtlpReceiver, args: tuple[str, ...],
    extra: dict[str, str],
) -> None:
    header, _, _ = traceparent()
    with run_server(models_dir, tmp_path, *args, env=otel_env(receiver, **extra)) as server, \
            httpx.Client(base_url=server.url) as c:
        for _ in range(50):
            r = c.post("/v2/models/iris/infer", json=IRIS, headers={"traceparent": header})
            assert r.status_code == 200
        assert server.stop() == 0  # an on tracer would flush here
    assert receiver.exports == 0 and receiver.snapshot() == []


def test_bad_sampler_settings_stop_the_server_with_a_clear_message(
    models_dir: Path, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.run(
        [sys.executable, "-P", "-m", "serving", "serve", "--registry", str(models_dir),
         "--port", "0", "--tracing"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "OTEL_TRACES_SAMPLER_ARG must be a ratio in [0, 1], got '2'" in p.stderr


def test_each_worker_process_exports_its_spans(
    models_dir: Path, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    with run_server(models_dir, tmp_path, "--tracing", "--workers", "2",
                    env=otel_env(receiver)) as server:
        def instances() -> set[str]:
            # a new connection per request: the kernel spreads them over the two listeners
            r = httpx.post(f"{server.url}/v2/models/iris/infer", json=IRIS)
            assert r.status_code == 200
            return {s.resource["service.instance.id"] for s in receiver.snapshot()
                    if s.kind == SERVER}

        wait_for(lambda: len(instances()) == 2, timeout=60)


def test_grpc_model_infer_span(
    registry_copy: Path, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """A ModelInfer call from tritonclient.grpc, with the caller's traceparent in its metadata,
    is one SERVER span under the caller's, named and attributed by the RPC conventions, with the
    same phase children as HTTP."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tests.e2e import grpc_checks
    from tests.e2e.test_grpc import free_port

    port = free_port()
    header, trace_id, client_span = traceparent()
    with run_server(registry_copy, tmp_path, "--tracing", "--grpc-port", str(port),
                    env=otel_env(receiver)), \
            ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(grpc_checks.traced_infer, f"127.0.0.1:{port}", header).result(timeout=120)
        name = "inference.GRPCInferenceService/ModelInfer"
        wait_for(lambda: {name, *PHASES} <= set(of_trace(receiver.snapshot(), trace_id)),
                 timeout=30)
    spans = of_trace(receiver.snapshot(), trace_id)
    root = spans[name]
    assert root.parent_span_id == client_span and root.kind == SERVER
    assert root.attributes["rpc.system.name"] == "grpc"
    assert root.attributes["rpc.method"] == name
    assert root.attributes["rpc.response.status_code"] == "OK"
    assert root.attributes["serving.protocol"] == "grpc"
    assert root.attributes["serving.model.name"] == "iris"
    assert root.attributes["network.peer.address"] == "127.0.0.1"
    for phase in PHASES:
        assert spans[phase].parent_span_id == root.span_id
