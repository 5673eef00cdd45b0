"""What tracing costs: the server with tracing off, on with a 1% sampler and on with 100%.

    python benchmarks/bench_tracing.py [--model iris] [--clients 64] [--duration 5]
                                       [--repeats 3] [--baseline DIR]

Every server exports to an OTLP/HTTP sink (a process that answers 200 without decoding, on the
load generator's core), so "on" pays for building, encoding and sending its spans. `--baseline
DIR` adds a server run from another source tree (say a checkout of the main branch, with its
extension built) to compare "off" against code without tracing. The servers run interleaved,
`--repeats` times, one row per request with wrk as in bench_e2e.py; medians and ratios to
"off" are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
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
                "OTEL_SERVICE_NAME=bench", *extra, sys.executable, "-P", "-m", "serving",
                "serve", "--registry", str(registry), "--log-level", "warning",
                "--drain-grace", "0"]

    specs = {}
    if baseline:
        specs["baseline"] = ours(baseline)
    specs["off"] = ours(ROOT)
    for name, ratio in (("on-1%", "0.01"), ("on-100%", "1")):
        specs[name] = [*ours(ROOT, "OTEL_TRACES_SAMPLER=parentbased_traceidratio",
                             f"OTEL_TRACES_SAMPLER_ARG={ratio}"), "--tracing"]
    return specs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="iris")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--registry", help="registry with the example models (default: build one)")
    ap.add_argument("--baseline", metavar="DIR", help="also serve from this source tree")
    ap.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sink:
        sink(args.sink)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-tracing-"))
    registry = registries(args.registry, tmp)[0]
    body = v2_body(sample_inputs(registry, [args.model])[args.model])
    sink_port = free_port()
    specs = servers(registry, f"http://127.0.0.1:{sink_port}", args.baseline)
    print(f"# {args.model}, one row per request, {args.clients} clients; server on core "
          f"{SERVER_CPU}, wrk and the OTLP sink on core {LOAD_CPU}; {args.duration}s runs, "
          f"interleaved, median of {args.repeats}")
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in specs}
    with running_sink(sink_port), contextlib.ExitStack() as stack:
        ports = {}
        for name, cmd in specs.items():
            ports[name] = free_port()
            url = f"http://127.0.0.1:{ports[name]}"
            stack.enter_context(start([*cmd, "--port", str(ports[name])],
                                      f"{url}/v2/health/ready", tmp / f"{name}.log"))
        for name in specs:  # warm-up: first requests load lazily and measure the model
            run_wrk(f"http://127.0.0.1:{ports[name]}/v2/models/{args.model}/infer", body,
                    args.clients, 1, tmp)
        for _ in range(args.repeats):
            for name in specs:
                url = f"http://127.0.0.1:{ports[name]}/v2/models/{args.model}/infer"
                runs[name].append(run_wrk(url, body, args.clients, args.duration, tmp))
    med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
    print("| server | req/s (median) | runs | vs off | p50 ms | p99 ms | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, m in med.items():
        each = " / ".join(f"{r['rps']:.0f}" for r in runs[name])
        print(f"| {name} | {m['rps']:.0f} | {each} | {m['rps'] / med['off']['rps']:.3f}x | "
              f"{m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['errors']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
