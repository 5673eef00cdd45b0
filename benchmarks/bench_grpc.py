"""gRPC against HTTP on this server, and against MLServer's gRPC: one-row requests, closed loop.

    python benchmarks/bench_grpc.py [--models iris,digits] [--clients 1,64] [--duration 5]
                                    [--repeats 3] [--mlserver-venv .venv-mlserver] [--json out]

Our server runs twice (batching on, batching off: `enabled = false` in every model.toml), each
pinned to core 0 with HTTP and gRPC on; each cell runs HTTP (wrk, as bench_e2e.py) and gRPC
(h2load, nghttp2's C HTTP/2 generator: `apt-get install nghttp2-client`, sending a framed
ModelInferRequest with raw_input_contents, as tritonclient and perf_analyzer do) interleaved,
`--repeats` times, and reports medians. Both generators are pinned to core 1 and their CPU use
is printed: a generator near 100% is the ceiling, not the server. h2load sees gRPC failures as
HTTP 200 (the status travels in trailers), so errors come from the server's own counters
(serving_protocol_requests_total) and MLServer's answers are checked before and after its runs.
MLServer 1.7.1 (`bash benchmarks/setup_mlserver.sh`) serves the same model.onnx files through
benchmarks/mlserver_onnx/ and is measured after ours (not interleaved).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import bench_e2e  # noqa: E402  (benchmarks/ is not a package)

from serving.grpc_api.proto import grpc_service_pb2 as pb  # noqa: E402

INFER = "/inference.GRPCInferenceService/ModelInfer"


def grpc_frame(model: str, x: np.ndarray, raw: bool = True) -> bytes:
    """A length-prefixed ModelInferRequest, as it travels in an HTTP/2 DATA frame."""
    req = pb.ModelInferRequest(model_name=model)
    t = req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    if raw:
        req.raw_input_contents.append(np.ascontiguousarray(x, np.float32).tobytes())
    else:
        t.contents.fp32_contents.extend(x.ravel().tolist())
    msg = req.SerializeToString()
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def grpc_check(address: str, frame: bytes, rows: int) -> None:
    """One call through grpcio: the answer must be OK with `rows` labels."""
    import grpc

    with grpc.insecure_channel(address) as ch:
        call = ch.unary_unary(INFER, request_serializer=lambda b: b,
                              response_deserializer=pb.ModelInferResponse.FromString)
        out = call(frame[5:], timeout=10)
    label = next(i for i, o in enumerate(out.outputs) if o.name == "label")
    n = (len(out.raw_output_contents[label]) // 8 if out.raw_output_contents
         else len(out.outputs[label].contents.int64_contents))
    if n != rows:
        raise RuntimeError(f"{address}: {n} labels for {rows} rows: {out}")


def run_h2load(address: str, frame: bytes, clients: int, duration: float, tmp: Path
               ) -> dict[str, float]:
    """One closed-loop h2load run (`clients` connections, one stream each)."""
    body = tmp / f"frame-{abs(hash(frame))}.bin"
    body.write_bytes(frame)
    log = tmp / "h2load.log"
    log.unlink(missing_ok=True)  # h2load appends to it
    cmd = bench_e2e.pinned(bench_e2e.LOAD_CPU, [
        "h2load", "-c", str(clients), "-m", "1", "-D", str(int(duration)), "--warm-up-time", "1",
        "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
        f"--log-file={log}", f"http://{address}{INFER}"])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(out)
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    failed = int(re.search(r"(\d+) failed", out).group(1))  # type: ignore[union-attr]
    lat = sorted(int(line.split()[2]) for line in log.read_text().splitlines() if line.strip())
    p50, p99 = (lat[len(lat) // 2] / 1e3, lat[int(len(lat) * 0.99)] / 1e3) if lat else (0, 0)
    cpu = (usage.ru_utime + usage.ru_stime) / (duration + 1) * 100  # warm-up included
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "gen_cpu_pct": cpu, "errors": failed}


def grpc_failures(http_url: str) -> float:
    """Our server's gRPC requests that failed, so far (not counting `cancelled`: h2load stops
    at the end of a run with calls in flight, and those count as cancelled)."""
    with urllib.request.urlopen(f"{http_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(
        r'serving_protocol_requests_total\{[^}]*outcome="(?!success|cancelled)[^"]*"[^}]*'
        r'protocol="grpc"[^}]*\} ([\d.e+]+)', text))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="iris,digits")
    ap.add_argument("--clients", default="1,64")
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--registry", help="registry with the example models (default: build one)")
    ap.add_argument("--mlserver-venv", default=".venv-mlserver", metavar="DIR",
                    help="MLServer virtualenv (benchmarks/setup_mlserver.sh); skipped if absent")
    ap.add_argument("--json", help="write the results here")
    return ap.parse_args()


def row(cell: dict[str, Any]) -> None:
    print(f"| {cell['model']} | {cell['clients']} | {cell['server']} | {cell['protocol']} | "
          f"{cell['rps']:.0f} | {cell['p50_ms']:.2f} | {cell['p99_ms']:.2f} | "
          f"{cell['errors']:.0f} | {cell['gen_cpu_pct']:.0f}% |", flush=True)


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


@contextlib.contextmanager
def ours(registry: Path, tmp: Path, name: str) -> Iterator[tuple[str, str]]:
    port, grpc_port = bench_e2e.free_port(), bench_e2e.free_port()
    cmd = [sys.executable, "-m", "serving", "serve", "--registry", str(registry),
           "--port", str(port), "--grpc-port", str(grpc_port), "--log-level", "warning",
           "--drain-grace", "0"]
    url = f"http://127.0.0.1:{port}"
    with bench_e2e.start(cmd, f"{url}/v2/health/ready", tmp / f"{name}.log"):
        yield url, f"127.0.0.1:{grpc_port}"


def measure_ours(args: argparse.Namespace, registry: Path, nobatch: Path, tmp: Path,
                 samples: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    models, clients = args.models.split(","), [int(c) for c in args.clients.split(",")]
    for name, reg in (("batching", registry), ("nobatch", nobatch)):
        with ours(reg, tmp, name) as (url, address):
            for model in models:
                frame, body = grpc_frame(model, samples[model]), bench_e2e.v2_body(samples[model])
                grpc_check(address, frame, 1)
                for n in clients:
                    runs: dict[str, list[dict[str, float]]] = {"http": [], "grpc": []}
                    for _ in range(args.repeats):  # interleaved
                        runs["http"].append(bench_e2e.run_wrk(
                            f"{url}/v2/models/{model}/infer", body, n, args.duration, tmp))
                        failed = grpc_failures(url)
                        run = run_h2load(address, frame, n, args.duration, tmp)
                        run["errors"] += grpc_failures(url) - failed
                        runs["grpc"].append(run)
                    for protocol, rs in runs.items():
                        cell = {"model": model, "clients": n, "server": name,
                                "protocol": protocol, **median(rs), "runs": rs}
                        cells.append(cell)
                        row(cell)
    return cells


def measure_mlserver(args: argparse.Namespace, registry: Path, tmp: Path,
                     samples: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    venv = Path(args.mlserver_venv)
    venv = venv if venv.is_absolute() else HERE.parent / venv
    exe = venv / "bin" / "mlserver"
    if not exe.exists():
        print(f"# mlserver skipped: no {exe} (bash benchmarks/setup_mlserver.sh)", flush=True)
        return []
    port, grpc_port = bench_e2e.free_port(), bench_e2e.free_port()
    repo = tmp / "mlserver-repo"
    repo.mkdir()
    (repo / "settings.json").write_text(json.dumps({
        "debug": False, "parallel_workers": 0, "host": "127.0.0.1", "http_port": port,
        "grpc_port": grpc_port, "metrics_endpoint": None, "gzip_enabled": False,
        "load_models_at_startup": True}))
    models = args.models.split(",")
    for model in models:
        onnx = max((registry / model).glob("*/model.onnx"), key=lambda p: int(p.parent.name))
        (repo / model).mkdir()
        (repo / model / "model-settings.json").write_text(json.dumps({
            "name": model, "implementation": "mlserver_onnx.OnnxModel",
            "parameters": {"uri": str(onnx), "version": onnx.parent.name}}))
    cmd = ["env", f"PYTHONPATH={HERE}", str(exe), "start", str(repo)]
    address = f"127.0.0.1:{grpc_port}"
    cells = []
    with bench_e2e.start(cmd, f"http://127.0.0.1:{port}/v2/health/ready", tmp / "mlserver.log"):
        for model in models:
            frame = grpc_frame(model, samples[model])
            try:
                grpc_check(address, frame, 1)
            except Exception as exc:  # grpc.RpcError: fall back to typed contents
                print(f"# mlserver: raw contents refused ({exc}); typed contents", flush=True)
                frame = grpc_frame(model, samples[model], raw=False)
                grpc_check(address, frame, 1)
            for n in [int(c) for c in args.clients.split(",")]:
                rs = [run_h2load(address, frame, n, args.duration, tmp)
                      for _ in range(args.repeats)]
                grpc_check(address, frame, 1)
                cell = {"model": model, "clients": n, "server": "mlserver", "protocol": "grpc",
                        **median(rs), "runs": rs}
                cells.append(cell)
                row(cell)
    return cells


def ratios(cells: list[dict[str, Any]]) -> list[str]:
    rps: dict[tuple[str, int, str, str], float] = {
        (c["model"], c["clients"], c["server"], c["protocol"]): c["rps"] for c in cells}
    lines = []
    for (model, n, server, protocol), v in sorted(rps.items()):
        if protocol != "grpc" or server == "mlserver":
            continue
        text = f"{model} @ {n} ({server}): gRPC/HTTP {v / rps[model, n, server, 'http']:.2f}x"
        ml = rps.get((model, n, "mlserver", "grpc"))
        if ml:
            text += f", gRPC/MLServer gRPC {v / ml:.1f}x"
        lines.append(text)
    return lines


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        registry, nobatch, _ = bench_e2e.registries(args.registry, tmp)
        samples = bench_e2e.sample_inputs(registry, args.models.split(","))
        load = os.getloadavg()
        print(f"# load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; server on core "
              f"{bench_e2e.SERVER_CPU}, generators on core {bench_e2e.LOAD_CPU}", flush=True)
        print("| model | clients | server | protocol | req/s | p50 ms | p99 ms | errors | "
              "generator CPU |\n|---|---|---|---|---|---|---|---|---|", flush=True)
        measure: list[Callable[[], list[dict[str, Any]]]] = [
            lambda: measure_ours(args, registry, nobatch, tmp, samples),
            lambda: measure_mlserver(args, registry, tmp, samples)]
        cells = [c for m in measure for c in m()]
        for line in ratios(cells):
            print(f"# {line}")
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"load_average": load, "cells": cells}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
