"""Tabular benchmark: a DataFrame pipeline (one ONNX input per column, string columns as BYTES)
served by this server (dynamic batching) vs the naive server given the same ONNX file.

    python benchmarks/bench_tabular.py [--rows 1,64] [--clients 1,64] [--duration 5]
                                       [--repeats 3] [--pipeline example|tests]
                                       [--baseline DIR] [--numeric iris,digits]
                                       [--registry REG --model NAME]

By default it builds the `tabular` example that `serving examples` publishes (wine: alcohol,
malic_acid, flavanoids, color_intensity FP32, proline INT64, hue and ash_grade strings; scaler +
one-hot + logistic regression, drift monitoring on) and sends rows of its data; `--pipeline
tests` uses the tests' model instead (age INT64, income FP32, colour and city strings). Same
machinery as bench_e2e.py: the server pinned to core 0, wrk on core 1, runs interleaved,
medians reported. `--numeric iris,digits` also builds those one-matrix examples into the same
registry and runs their cells (the same rows per request and clients) in the same rounds, so the
tabular model's ratios to naive are compared with theirs under the same load.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.bench_e2e import (  # noqa: E402
    NCPU,
    SERVER_CPU,
    _start_naive,
    free_port,
    run_wrk,
    sample_inputs,
    start,
    v2_body,
)


def tabular_body(rows: int, pipeline: str) -> bytes:
    """A V2 request with one [rows, 1] tensor per column, as MLServer's pandas codec sends."""
    if pipeline == "example":
        from serving.packaging.examples import tabular_frame

        data, _ = tabular_frame()
        df = data.iloc[[i % len(data) for i in range(rows)]]
    else:
        from tests.e2e.tabular import frame

        df = frame(rows, seed=42)
    types = {"i": "INT64", "f": "FP32", "O": "BYTES"}
    return orjson.dumps({"inputs": [
        {"name": c, "datatype": types[df[c].dtype.kind], "shape": [rows, 1],
         "data": df[c].tolist()} for c in df.columns]})


def build_registry(root: Path, name: str, pipeline: str) -> None:
    if pipeline == "example":
        from serving.packaging.examples import EXAMPLES, build_example, publish

        example = next(e for e in EXAMPLES if e.name == "tabular")
        manifest, onnx_bytes = build_example(example)
        publish(root, dataclasses.replace(manifest, name=name), onnx_bytes,
                example.max_batch_size)
        return
    from tests.e2e.tabular import fit_pipeline, publish_tabular

    publish_tabular(root, name, fit_pipeline("logistic"), with_reference=True)


def build_numeric(root: Path, models: list[str]) -> None:
    from serving.packaging.examples import EXAMPLES, build_example, publish

    for example in EXAMPLES:
        if example.name in models:
            manifest, onnx_bytes = build_example(example)
            publish(root, manifest, onnx_bytes, example.max_batch_size)


def run_cell(bodies: dict[str, bytes], names: tuple[str, ...], url: dict[str, str], rows: int,
             clients: int, args: argparse.Namespace, tmp: Path) -> None:
    """One rows x clients cell for every model, servers interleaved; a table row per server."""
    runs: dict[tuple[str, str], list[dict[str, float]]] = {
        (m, n): [] for m in bodies for n in names}
    for _ in range(args.repeats):
        for m, body in bodies.items():
            for n in names:  # interleaved
                runs[m, n].append(run_wrk(f"{url[n]}/v2/models/{m}/infer", body, clients,
                                          args.duration, tmp))
    for m in bodies:
        med = {n: {k: statistics.median(r[k] for r in runs[m, n]) for k in runs[m, n][0]}
               for n in names}
        base = med["naive"]["rps"]
        for n in names:
            x = med[n]
            ratio = f"{x['rps'] / base:.2f}x" if base else "n/a"
            print(f"| {m} | {rows} | {clients} | {n} | {x['rps']:.0f} | {x['rps'] * rows:.0f} | "
                  f"{x['p50_ms']:.2f} | {x['p99_ms']:.2f} | {ratio} | {x['errors']:.0f} | "
                  f"{x['gen_cpu_pct']:.0f}% |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="1,64", help="rows per request")
    ap.add_argument("--clients", default="1,64")
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--registry", help="a registry holding the tabular model (default: build)")
    ap.add_argument("--model", default="tabular")
    ap.add_argument("--pipeline", choices=("example", "tests"), default="example",
                    help="which DataFrame pipeline to build and send rows of")
    ap.add_argument("--baseline", default="",
                    help="a checkout of another revision, run as the server 'baseline' in the "
                         "same rounds: A/B a change within one run")
    ap.add_argument("--numeric", default="",
                    help="one-matrix example models (e.g. iris,digits) run in the same rounds")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-tabular-"))
    registry = Path(args.registry) if args.registry else tmp / "registry"
    if not args.registry:
        build_registry(registry, args.model, args.pipeline)
    numeric = [m for m in args.numeric.split(",") if m]
    if numeric and not args.registry:
        build_numeric(registry, numeric)
    x_rows = sample_inputs(registry, numeric)
    rows_list = [int(r) for r in args.rows.split(",")]
    clients = [int(c) for c in args.clients.split(",")]
    names = ("batching", "baseline", "naive") if args.baseline else ("batching", "naive")
    ports = {n: free_port() for n in names}
    url = {n: f"http://127.0.0.1:{ports[n]}" for n in names}
    def serve(port: int) -> list[str]:
        return ["-m", "serving", "serve", "--registry", str(registry), "--port", str(port),
                "--grpc-port", "0", "--log-level", "warning", "--drain-grace", "0"]

    ours = [sys.executable, *serve(ports["batching"])]
    naive = [sys.executable, str(HERE / "naive_server.py"), str(registry), str(ports["naive"])]
    # another checkout's package, not the one in the current directory
    baseline = ["env", f"PYTHONPATH={Path(args.baseline).resolve()}", sys.executable, "-P",
                *serve(ports.get("baseline", 0))]
    print(f"# cores: {NCPU}; servers on core {SERVER_CPU}; {args.duration}s per run, "
          f"median of {args.repeats}; model {args.model!r} ({args.pipeline} pipeline)")
    print("| model | rows/req | clients | server | req/s | rows/s | p50 ms | p99 ms | vs naive | "
          "errors | wrk CPU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with contextlib.ExitStack() as stack:
        stack.enter_context(start(ours, f"{url['batching']}/v2/health/ready",
                                  tmp / "batching.log"))
        if args.baseline:
            stack.enter_context(start(baseline, f"{url['baseline']}/v2/health/ready",
                                      tmp / "baseline.log"))
        stack.enter_context(_start_naive(naive, url["naive"], tmp, args.model,
                                         tabular_body(1, args.pipeline)))
        for rows in rows_list:
            bodies = {args.model: tabular_body(rows, args.pipeline)}
            for m in numeric:
                bodies[m] = v2_body(np.repeat(x_rows[m], rows, axis=0))
            for c in clients:
                run_cell(bodies, names, url, rows, c, args, tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
