"""End-to-end benchmark: this server (batching on and off) vs the naive server vs raw ONNX Runtime.

    python benchmarks/bench_e2e.py [--models iris,forest,digits] [--clients 1,16,64]
                                   [--duration 5] [--repeats 3] [--json results.json]

The server under test is pinned to core 0 and the load generator (wrk, a C closed-loop
generator: `apt-get install wrk`) to core 1 when the machine has two or more cores. Each
(model, clients) cell runs the servers interleaved, `--repeats` times, and reports medians.
The generator's own ceiling (a raw ASGI endpoint returning a constant) and its CPU use in each
run are printed, so a saturated generator is visible.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NCPU = len(os.sched_getaffinity(0))
SERVER_CPU = "0"
LOAD_CPU = "1" if NCPU > 1 else "0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpu: str, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if shutil.which("taskset") else cmd


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


@contextlib.contextmanager
def start(cmd: list[str], ready_url: str, log: Path, cpus: str = SERVER_CPU,
          cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """`cmd` pinned to `cpus`, once `ready_url` answers 200; `cwd`: where it runs (`python -m
    serving` there runs that checkout's code)."""
    with log.open("wb") as f:
        proc = subprocess.Popen(pinned(cpus, cmd), stdout=f, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        wait_http(ready_url)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_mb(pid: int) -> float:
    total = 0
    for p in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(url: str, body: bytes, clients: int, duration: float, lua_dir: Path,
            headers: dict[str, str] | None = None) -> dict[str, float]:
    """One closed-loop wrk run; requests/s, p50/p99 ms, and the generator's CPU use."""
    body_path = lua_dir / f"body-{abs(hash(body))}.bin"
    body_path.write_bytes(body)
    lua = lua_dir / f"post-{abs(hash((body, tuple((headers or {}).items()))))}.lua"
    hdrs = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
    lua.write_text(
        f'wrk.method = "POST"\nlocal f = io.open("{body_path}", "rb")\n'
        f"wrk.body = f:read(\"*a\")\nf:close()\n{hdrs}"
        'wrk.headers["Content-Type"] = "application/json"\n'
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("P50 %d\\nP99 %d\\nERR %d\\n", latency:percentile(50), '
        "latency:percentile(99), summary.errors.status + summary.errors.connect + "
        "summary.errors.read + summary.errors.write + summary.errors.timeout))\nend\n"
    )
    cmd = pinned(LOAD_CPU, ["wrk", "-t1", f"-c{clients}", f"-d{int(duration)}s", "-s", str(lua),
                            url])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = int(re.search(r"P50 (\d+)", out).group(1)) / 1e3  # type: ignore[union-attr]
    p99 = int(re.search(r"P99 (\d+)", out).group(1)) / 1e3  # type: ignore[union-attr]
    errors = int(re.search(r"ERR (\d+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    cpu = (usage.ru_utime + usage.ru_stime) / duration * 100
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "gen_cpu_pct": cpu,
            "errors": errors + (int(non2xx.group(1)) if non2xx else 0)}


def v2_body(x: np.ndarray) -> bytes:
    return orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                     "shape": list(x.shape), "data": x.tolist()}]})


def raw_ort_limit(registry: Path, model: str, rows: int = 1) -> dict[str, float]:
    """Rows/s of session.run in this process (pinned like the server), best batch size."""
    import onnxruntime as ort

    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {int(SERVER_CPU)})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    path = max((registry / model).glob("*/model.onnx"), key=lambda p: int(p.parent.name))
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    width = sess.get_inputs()[0].shape[1]
    best = {"rows_per_s": 0.0, "batch": 0}
    for batch in (1, 8, 32, 64, 256):
        x = np.random.default_rng(0).random((batch, width), dtype=np.float32)
        sess.run(None, {"input": x})
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.5:
            sess.run(None, {"input": x})
            n += 1
        rate = n * batch / (time.perf_counter() - t0)
        if rate > best["rows_per_s"]:
            best = {"rows_per_s": rate, "batch": batch}
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return best


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="iris,forest,digits")
    ap.add_argument("--clients", default="1,16,64")
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--registry", help="registry with the example models (default: build one)")
    ap.add_argument("--servers", default="batching,nobatch,naive",
                    help="any of batching, nobatch, nomonitor, naive, workers1, workers2 "
                         "(workersN: --workers N on every core, the generator on its core too)")
    ap.add_argument("--rows64", action="store_true",
                    help="also run the 64-rows-per-request MLP case at 16 clients")
    ap.add_argument("--soak", type=int, default=0, metavar="SECONDS",
                    help="instead: drive the batching server at 64 clients on iris and digits "
                         "for this long, and report its resident memory every minute")
    ap.add_argument("--json", help="write the results here")
    return ap.parse_args()


def registries(registry_arg: str | None, tmp: Path) -> tuple[Path, Path, Path]:
    """The example registry (built unless given), and copies with batching or drift off."""
    registry = Path(registry_arg) if registry_arg else tmp / "registry"
    if not registry_arg:
        sys.path.insert(0, str(ROOT))
        from serving.packaging.examples import build_examples

        build_examples(registry, log=lambda _m: None)
    nobatch = tmp / "registry-nobatch"
    shutil.copytree(registry, nobatch)
    for toml in nobatch.glob("*/model.toml"):
        toml.write_text(toml.read_text().replace("enabled = true", "enabled = false"))
    nomonitor = tmp / "registry-nomonitor"
    shutil.copytree(registry, nomonitor)
    for toml in nomonitor.glob("*/model.toml"):
        toml.write_text(toml.read_text() + "\n[monitoring]\ndrift = false\n")
    return registry, nobatch, nomonitor


def server_specs(registry: Path, nobatch: Path, nomonitor: Path) -> dict[str, Any]:
    """Server name -> (port -> command line)."""
    def ours(reg: Path, port: int) -> list[str]:
        return [sys.executable, "-m", "serving", "serve", "--registry", str(reg),
                "--port", str(port), "--grpc-port", "0", "--log-level", "warning",
                "--drain-grace", "0"]  # no gRPC: two servers would both want its port

    return {
        "batching": lambda port: ours(registry, port),
        "nobatch": lambda port: ours(nobatch, port),
        # drift monitoring off (it is on wherever the manifest has a reference profile)
        "nomonitor": lambda port: ours(nomonitor, port),
        "naive": lambda port: [sys.executable, str(HERE / "naive_server.py"), str(registry),
                               str(port)],
        "workers1": lambda port: [*ours(registry, port), "--workers", "1"],
        "workers2": lambda port: [*ours(registry, port), "--workers", "2"],
    }


def sample_inputs(registry: Path, models: list[str]) -> dict[str, np.ndarray]:
    """One sample row per model, from its manifest."""
    sys.path.insert(0, str(ROOT))
    from serving.registry.manifest import read_manifest

    rows = {}
    for model in models:
        m = read_manifest(next((registry / model).glob("*/manifest.json")))
        rows[model] = np.asarray(m.samples["input"][:1], np.float32)
    return rows


def main() -> int:
    args = parse_args()
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    models = args.models.split(",")
    clients = [int(c) for c in args.clients.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    registry, nobatch, nomonitor = registries(args.registry, tmp)
    specs = server_specs(registry, nobatch, nomonitor)
    names = args.servers.split(",")
    print(f"# cores: {NCPU}; server on core {SERVER_CPU}, wrk (1 thread) on core {LOAD_CPU}; "
          f"{args.duration:g}s per run, median of {args.repeats}")
    if any(n.startswith("workers") for n in names):
        print(f"# workersN servers may use cores 0-{NCPU - 1}: they share core {LOAD_CPU} "
              "with wrk")
    results: dict[str, Any] = {"cores": NCPU, "server_cpu": SERVER_CPU, "load_cpu": LOAD_CPU,
                               "duration_s": args.duration, "repeats": args.repeats,
                               "cells": [], "raw_ort": {}, "rss_mb": {}}

    # The generator's own ceiling: wrk against a constant ASGI endpoint on the server core.
    port = free_port()
    with start([sys.executable, str(HERE / "null_server.py"), str(port)],
               f"http://127.0.0.1:{port}/", tmp / "null.log"):
        ceiling = run_wrk(f"http://127.0.0.1:{port}/", b"{}", 64, args.duration, tmp)
    results["generator_ceiling"] = ceiling
    print(f"# generator ceiling (raw ASGI constant, 64 clients): {ceiling['rps']:.0f} req/s, "
          f"wrk CPU {ceiling['gen_cpu_pct']:.0f}%")
    for model in models:
        results["raw_ort"][model] = raw_ort_limit(registry, model)
    x_rows = sample_inputs(registry, models)
    if args.soak:
        return soak(registry, args.soak, tmp)
    cases = [(m, c, 1) for m in models for c in clients]
    if args.rows64:
        cases.append(("digits", 16, 64))
    run_cases(args, specs, names, cases, x_rows, results, tmp)
    print("# resident memory (MB, start -> end): " + ", ".join(
        f"{n} {v['start']:.0f} -> {v['end']:.0f}" for n, v in results["rss_mb"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def run_cases(
    args: argparse.Namespace, specs: dict[str, Any], names: list[str],
    cases: list[tuple[str, int, int]], x_rows: dict[str, np.ndarray], results: dict[str, Any],
    tmp: Path,
) -> None:
    """Start every server once, then run each case on all of them, interleaved."""
    all_cpus = f"0-{NCPU - 1}"
    ports = {n: free_port() for n in names}
    cells: list[dict[str, object]] = results["cells"]
    with contextlib.ExitStack() as stack:
        procs = {}
        for n in names:
            url = f"http://127.0.0.1:{ports[n]}"
            if n == "naive":
                # the naive server has no health route: wait until it answers an inference
                procs[n] = stack.enter_context(_start_naive(specs[n](ports[n]), url, tmp))
            else:
                cpus = all_cpus if n.startswith("workers") else SERVER_CPU
                procs[n] = stack.enter_context(
                    start(specs[n](ports[n]), f"{url}/v2/health/ready", tmp / f"{n}.log", cpus))
        for n in names:
            results["rss_mb"][n] = {"start": rss_mb(procs[n].pid)}
        for model, c, rows in cases:
            x = np.repeat(x_rows[model], rows, axis=0) if rows > 1 else x_rows[model]
            body = v2_body(x)
            runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
            for _ in range(args.repeats):
                for n in names:  # interleaved: A, B, C, A, B, C, ...
                    url = f"http://127.0.0.1:{ports[n]}/v2/models/{model}/infer"
                    runs[n].append(run_wrk(url, body, c, args.duration, tmp))
            for n in names:
                med = {k: statistics.median(r[k] for r in runs[n]) for k in runs[n][0]}
                cells.append({"model": model, "clients": c, "rows": rows, "server": n, **med,
                              "runs": runs[n]})
            _print_cell(cells[-len(names):], results["raw_ort"][model])
        for n in names:
            results["rss_mb"][n]["end"] = rss_mb(procs[n].pid)


def soak(registry: Path, seconds: int, tmp: Path) -> int:
    """RSS of a server with every example model loaded, under 64 clients, minute by minute."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "serving", "serve", "--registry", str(registry), "--port",
           str(port), "--log-level", "warning"]
    from serving.registry.manifest import read_manifest

    with start(cmd, f"{url}/v2/health/ready", tmp / "soak.log") as proc:
        print(f"# soak: {seconds}s at 64 clients, alternating iris and digits, one row per "
              f"request; server on core {SERVER_CPU}, wrk on core {LOAD_CPU}")
        print(f"t=0s rss {rss_mb(proc.pid):.1f} MB")
        t0 = time.monotonic()
        total = 0.0
        i = 0
        while time.monotonic() - t0 < seconds:
            model = ("iris", "digits")[i % 2]
            m = read_manifest(next((registry / model).glob("*/manifest.json")))
            body = v2_body(np.asarray(m.samples["input"][:1], np.float32))
            step = int(min(60, max(1, seconds - (time.monotonic() - t0))))
            r = run_wrk(f"{url}/v2/models/{model}/infer", body, 64, step, tmp)
            total += r["rps"] * step
            i += 1
            print(f"t={time.monotonic() - t0:.0f}s {model}: {r['rps']:.0f} req/s, "
                  f"p99 {r['p99_ms']:.2f} ms, errors {r['errors']:.0f}, "
                  f"rss {rss_mb(proc.pid):.1f} MB", flush=True)
        print(f"# {total:.0f} requests; end rss {rss_mb(proc.pid):.1f} MB")
    return 0


@contextlib.contextmanager
def _start_naive(cmd: list[str], url: str, tmp: Path, model: str = "iris",
                 body: bytes | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """The naive server, ready once `model` answers `body` (it has no health route)."""
    with (tmp / "naive.log").open("wb") as f:
        proc = subprocess.Popen(pinned(SERVER_CPU, cmd), stdout=f, stderr=subprocess.STDOUT)
    try:
        body = body or v2_body(np.zeros((1, 4), np.float32))
        deadline = time.monotonic() + 60
        while True:
            try:
                req = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=body)
                urllib.request.urlopen(req, timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


_HEADER = False


def _print_cell(rows: list[dict[str, object]], raw: dict[str, float]) -> None:
    global _HEADER
    if not _HEADER:
        print("| model | rows/req | clients | server | req/s | rows/s | p50 ms | p99 ms | "
              "vs naive | wrk CPU | raw ORT rows/s (batch) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        _HEADER = True
    naive = next((r for r in rows if r["server"] == "naive"), None)
    for r in rows:
        ratio = f"{r['rps'] / naive['rps']:.2f}x" if naive else "-"  # type: ignore[operator]
        print(f"| {r['model']} | {r['rows']} | {r['clients']} | {r['server']} | "
              f"{r['rps']:.0f} | {r['rps'] * r['rows']:.0f} | {r['p50_ms']:.2f} | "  # type: ignore[operator]
              f"{r['p99_ms']:.2f} | {ratio} | {r['gen_cpu_pct']:.0f}% | "
              f"{raw['rows_per_s']:.0f} ({raw['batch']}) |", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
