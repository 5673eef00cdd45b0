"""What tracing costs: the server with tracing off, on with a 1% sampler and on with 100%.

    python benchmarks/bench_tracing.py [--model iris] [--clients 64] [--duration 5]
                                       [--repeats 3] [--baseline DIR] [--in-process]

Every server exports to an OTLP/HTTP sink (a process that answers 200 without decoding, on the
load generator's core), so "on" pays for building, encoding and sending its spans. `--baseline
DIR` adds a server run from another source tree (say a checkout of the main branch, with its
extension built) to compare "off" against code without tracing. The servers run interleaved,
`--repeats` times, one row per request with wrk as in bench_e2e.py; medians and ratios to
"off" are printed, of throughput and of the server's own CPU time per request (user + system,
all its threads: the exporter's too), which other processes on a shared machine disturb far less
than throughput.

`--in-process` instead drives the three apps in this process as benchmarks/bench_app.py does (no
HTTP, no sockets; the exporter still sends to the sink) and prints the process's CPU time per
request, each run's spans flushed within it: the cost tracing adds per request, free of the
noise of a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_e2e import (  # noqa: E402 (the sibling script is the library)
    LOAD_CPU,
    ROOT,
    SERVER_CPU,
    free_port,
    pinned,
    registries,
    run_wrk,
    sample_inputs,
    start,
    v2_body,
)


def sink(port: int) -> None:
    """An OTLP/HTTP endpoint that reads each export and answers 200 (an empty response)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running_sink(port: int) -> Iterator[None]:
    proc = subprocess.Popen(pinned(LOAD_CPU, [sys.executable, __file__, "--sink", str(port)]))
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def servers(registry: Path, sink_url: str, baseline: str | None) -> dict[str, list[str]]:
    """Name -> the command before `--port N` (environment through `env`)."""
    def ours(tree: Path | str, *extra: str) -> list[str]:
        return ["env", f"PYTHONPATH={tree}", f"OTEL_EXPORTER_OTLP_ENDPOINT={sink_url}",
                "OTEL_SERVICE_NAME=bench", "SERVING_GRPC_PORT=0", *extra, sys.executable, "-P",
                "-m", "serving", "serve", "--registry", str(registry), "--log-level", "warning",
                "--drain-grace", "0"]

    specs = {}
    if baseline:
        specs["baseline"] = ours(baseline)
    specs["off"] = ours(ROOT)
    for name, ratio in (("on-1%", "0.01"), ("on-100%", "1")):
        specs[name] = [*ours(ROOT, "OTEL_TRACES_SAMPLER=parentbased_traceidratio",
                             f"OTEL_TRACES_SAMPLER_ARG={ratio}"), "--tracing"]
    return specs


async def in_process(args: argparse.Namespace, registry: Path, body: bytes, sink_url: str
                     ) -> None:
    """off / on-1% / on-100% apps side by side in this process: CPU us per request."""
    sys.path.insert(0, str(ROOT))
    from bench_app import drive
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from serving import tracing
    from serving.config import ServerConfig
    from serving.http.app import create_app
    from serving.tracing.export import build_tracer

    path = f"/v2/models/{args.model}/infer"
    n = args.clients * 200
    apps: dict[str, tuple[object, BatchSpanProcessor | None]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for name, ratio in (("off", None), ("on-1%", "0.01"), ("on-100%", "1")):
            processor = None
            if ratio is not None:
                processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{sink_url}/v1/traces"))
                env = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                       "OTEL_TRACES_SAMPLER_ARG": ratio}
                stack.callback(processor.shutdown)
            tracing.activate(build_tracer(env, processor) if processor else None)
            app = create_app(ServerConfig(registry=str(registry), log_level="warning"))
            await stack.enter_async_context(app.starlette.router.lifespan_context(app.starlette))
            while not app.manager.loading_done:  # its schedulers read tracing.active() now
                await asyncio.sleep(0.05)
            apps[name] = (app, processor)
        tracing.activate(None)
        print(f"# {args.model}, one row per request, {args.clients} concurrent clients in "
              f"process (no HTTP), {n} requests a run, interleaved, median of {args.repeats}")
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in apps}
        for _ in range(args.repeats + 1):  # the first round warms up
            for name, (app, processor) in apps.items():
                c0 = time.process_time()
                wall = await drive(app, path, body, n, args.clients)
                if processor is not None:
                    processor.force_flush()  # this run's spans, encoded and sent, count here
                runs[name].append((wall, (time.process_time() - c0) / n * 1e6))
        print("| app | CPU us/request | added | wall us/request | runs (CPU) |")
        print("| --- | --- | --- | --- | --- |")
        off = statistics.median(c for _, c in runs["off"][1:])
        for name, rs in runs.items():
            cpu = statistics.median(c for _, c in rs[1:])
            wall = statistics.median(w for w, _ in rs[1:])
            each = " / ".join(f"{c:.1f}" for _, c in rs[1:])
            print(f"| {name} | {cpu:.1f} | {cpu - off:+.1f} us ({cpu / off - 1:+.1%}) | "
                  f"{wall:.1f} | {each} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="iris")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--registry", help="registry with the example models (default: build one)")
    ap.add_argument("--baseline", metavar="DIR", help="also serve from this source tree")
    ap.add_argument("--in-process", action="store_true",
                    help="the apps in this process, without HTTP: CPU time per request")
    ap.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sink:
        sink(args.sink)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-tracing-"))
    registry = registries(args.registry, tmp)[0]
    body = v2_body(sample_inputs(registry, [args.model])[args.model])
    sink_port = free_port()
    if args.in_process:
        import uvloop

        with running_sink(sink_port):
            uvloop.run(in_process(args, registry, body, f"http://127.0.0.1:{sink_port}"))
        return 0
    specs = servers(registry, f"http://127.0.0.1:{sink_port}", args.baseline)
    print(f"# {args.model}, one row per request, {args.clients} clients; server on core "
          f"{SERVER_CPU}, wrk and the OTLP sink on core {LOAD_CPU}; {args.duration}s runs, "
          f"interleaved, median of {args.repeats}")
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in specs}
    with running_sink(sink_port), contextlib.ExitStack() as stack:
        ports, pids = {}, {}
        for name, cmd in specs.items():
            ports[name] = free_port()
            url = f"http://127.0.0.1:{ports[name]}"
            pids[name] = stack.enter_context(start([*cmd, "--port", str(ports[name])],
                                                   f"{url}/v2/health/ready",
                                                   tmp / f"{name}.log")).pid
        for name in specs:  # warm-up: first requests load lazily and measure the model
            run_wrk(f"http://127.0.0.1:{ports[name]}/v2/models/{args.model}/infer", body,
                    args.clients, 1, tmp)
        for _ in range(args.repeats):
            for name in specs:
                url = f"http://127.0.0.1:{ports[name]}/v2/models/{args.model}/infer"
                cpu = cpu_seconds(pids[name])
                run = run_wrk(url, body, args.clients, args.duration, tmp)
                used = cpu_seconds(pids[name]) - cpu
                run["cpu_us"] = used / (run["rps"] * args.duration) * 1e6
                runs[name].append(run)
    med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
    off = med["off"]
    print("| server | req/s (median) | runs | vs off | CPU us/request | vs off | p50 ms | "
          "p99 ms | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, m in med.items():
        each = " / ".join(f"{r['rps']:.0f}" for r in runs[name])
        print(f"| {name} | {m['rps']:.0f} | {each} | {m['rps'] / off['rps']:.3f}x | "
              f"{m['cpu_us']:.1f} | {m['cpu_us'] / off['cpu_us']:.3f}x | {m['p50_ms']:.2f} | "
              f"{m['p99_ms']:.2f} | {m['errors']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
