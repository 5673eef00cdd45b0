"""One command for the end-to-end benchmark: run it, keep the numbers, write a report and plots.

    python benchmarks/report.py [--models iris,forest,digits] [--clients 1,4,16,64]
                                [--duration 5] [--repeats 3] [--rows64]
                                [--mlserver [--mlserver-venv .venv-mlserver]] [--out DIR]
    python benchmarks/report.py --from-json benchmarks/results/STAMP/results.json [--out DIR]

It runs benchmarks/bench_e2e.py as a subprocess with --json (this server with batching on and
off and the naive server, interleaved, pinned to core 0; wrk pinned to core 1; the raw ONNX
Runtime limit and the generator's ceiling), adds the machine (CPU model, cores, memory, Python,
ONNX Runtime and numpy versions, commit), the command line and the date, and writes into --out
(default: benchmarks/results/<UTC timestamp>/, which git ignores):

    results.json             bench_e2e's JSON plus "machine", "command", "date_utc", ...
    report.md                the results table, the raw ORT limit per model, the generator
                             ceiling, resident memory, the machine and the exact command
    MODEL-throughput.png     requests/s vs concurrent clients, one line per server
    MODEL-latency.png        p50 and p99 latency vs requests/s, one line per server
    bench_e2e.log            the benchmark's own output

--from-json FILE re-renders report.md and the plots from an existing results.json (into the
file's folder unless --out says otherwise) without running anything.

--mlserver adds MLServer 1.7.1 when its virtualenv exists (--mlserver-venv, default
.venv-mlserver; `bash benchmarks/setup_mlserver.sh` makes it). It serves the same model.onnx
files through the small ONNX Runtime runtime in benchmarks/mlserver_onnx/, in its best
configuration for one core (parallel_workers 0, debug and access logs off, no metrics server,
no gzip middleware, uvloop 0.21.0 and httptools), pinned to core 0. Its cells run right after
bench_e2e's, with the same cases, duration and repeats, wrk driven by bench_e2e's own
run_wrk: they are NOT interleaved with the other servers' runs, and the report says so.

The plots need matplotlib (the `bench` extra: `pip install "matplotlib>=3.7"`); without it
results.json and report.md are still written. Tests never need it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

import bench_e2e  # noqa: E402  (a sibling script, imported as a module)
from report_render import render  # noqa: E402  (report.md and the plots)

Results = dict[str, Any]
Cell = dict[str, Any]


# ----------------------------------------------------------------------------- running


def main() -> int:
    args = parse_args()
    if args.from_json:
        src = Path(args.from_json)
        results = json.loads(src.read_text())
        out = Path(args.out) if args.out else src.parent
        out.mkdir(parents=True, exist_ok=True)
        if (out / "results.json").resolve() != src.resolve():
            shutil.copyfile(src, out / "results.json")
        render(results, out)
        return 0

    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    models = args.models.split(",")
    if args.rows64 and "digits" not in models:
        print("--rows64 runs the digits MLP: add digits to --models", file=sys.stderr)
        return 2
    stamp = dt.datetime.now(dt.UTC)
    out = Path(args.out) if args.out else RESULTS / stamp.strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="report-"))
    try:
        # One registry for every server, MLServer included: the same model.onnx files.
        registry = tmp / "registry"
        sys.path.insert(0, str(ROOT))
        from serving.packaging.examples import build_examples

        build_examples(registry, log=lambda _m: None)
        busy_before = cpu_busy_pct()
        other = OtherCpu()
        bench_cmd = [sys.executable, str(HERE / "bench_e2e.py"), "--models", args.models,
                     "--clients", args.clients, "--duration", str(args.duration),
                     "--repeats", str(args.repeats), "--servers", args.servers,
                     "--registry", str(registry), "--json", str(out / "bench_e2e.json")]
        if args.rows64:
            bench_cmd.append("--rows64")
        run_bench(bench_cmd, out / "bench_e2e.log")
        results: Results = json.loads((out / "bench_e2e.json").read_text())
        (out / "bench_e2e.json").unlink()
        results.update({
            "date_utc": stamp.isoformat(timespec="seconds"),
            "command": portable([sys.executable, *sys.argv], tmp),
            "bench_e2e_command": portable(bench_cmd, tmp),
            "models": models,
            "machine": {**machine_info(), "cpu_busy_pct_before": busy_before},
        })
        if args.mlserver:
            results["mlserver"] = run_mlserver(args, registry, models, results, out, tmp)
        results["machine"]["cpu_other_pct_during"] = other.pct()
        results["machine"]["cpu_busy_pct_after"] = cpu_busy_pct()
        (out / "results.json").write_text(json.dumps(results, indent=2))
        render(results, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="iris,forest,digits")
    ap.add_argument("--clients", default="1,4,16,64", help="concurrency levels (curve points)")
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--repeats", type=int, default=3, help="runs per cell (median reported)")
    ap.add_argument("--rows64", action="store_true",
                    help="also the 64-rows-per-request digits case at 16 clients")
    ap.add_argument("--servers", default="batching,nobatch,naive",
                    help="bench_e2e servers to run (default: all three)")
    ap.add_argument("--out", help="output folder (default: benchmarks/results/<UTC stamp>/)")
    ap.add_argument("--from-json", metavar="FILE",
                    help="re-render report.md and plots from this results.json; run nothing")
    ap.add_argument("--mlserver", action="store_true",
                    help="also MLServer, if its virtualenv exists (not interleaved)")
    ap.add_argument("--mlserver-venv", default=".venv-mlserver", metavar="DIR",
                    help="MLServer virtualenv, relative to the repository root "
                         "(default: .venv-mlserver; made by benchmarks/setup_mlserver.sh)")
    return ap.parse_args()


def portable(argv: list[str], tmp: Path) -> str:
    """The command as a reader would type it: paths relative to the repository root, the
    temporary folder as $TMPDIR, so no report names a path of the machine it ran on."""
    out = []
    for arg in argv:
        if arg.startswith(str(tmp)):
            arg = "$TMPDIR" + arg[len(str(tmp)):]
        elif arg.startswith(str(ROOT) + os.sep):
            arg = os.path.relpath(arg, ROOT)
        elif os.path.isabs(arg) and Path(arg).name.startswith("python"):
            arg = "python"
        out.append(arg if arg.startswith("$TMPDIR") else shlex.quote(arg))
    return " ".join(out)


def run_bench(cmd: list[str], log: Path) -> None:
    """Runs bench_e2e.py, echoing its output and keeping it in `log`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    print("$ " + shlex.join(cmd), flush=True)
    with log.open("w") as f, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            f.write(line)
    if proc.returncode != 0:
        raise SystemExit(f"bench_e2e.py failed (exit {proc.returncode}); see {log}")


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        mem_gb = round(int(kb) / 2**20, 1)

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "cpu_model": cpu,
        "cores_online": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gb": mem_gb,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": version("onnxruntime"),
        "numpy": version("numpy"),
        "wrk": (wrk.stdout or wrk.stderr).split(" Copyright")[0].strip() or None,
        "commit": git_commit(),
    }


def _proc_stat() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine, all cores, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - fields[3] - fields[4]) / tick, sum(fields) / tick  # less idle, iowait


def cpu_busy_pct(seconds: float = 2.0) -> float | None:
    """The machine's CPU use, all cores, over `seconds` (100: every core busy)."""
    try:
        busy0, total0 = _proc_stat()
        time.sleep(seconds)
        busy1, total1 = _proc_stat()
    except (OSError, ValueError, IndexError):
        return None
    return round(100 * (busy1 - busy0) / max(1e-9, total1 - total0), 1)


class OtherCpu:
    """The share of the machine's CPU that the benchmark's processes were not charged for.

    Machine busy time (/proc/stat) less this process's and its waited-for descendants' CPU
    time (the servers, wrk, bench_e2e): other processes plus some kernel network work, which
    the loopback traffic itself causes, so a few percent is the floor, not noise.
    """

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            busy, total = _proc_stat()
        except (OSError, ValueError, IndexError):
            return None
        t = os.times()
        return busy, total, t.user + t.system + t.children_user + t.children_system

    def pct(self) -> float | None:
        end = self._sample()
        if not self.start or not end:
            return None
        busy, total, ours = (b - a for a, b in zip(self.start, end, strict=True))
        return round(max(0.0, 100 * (busy - ours) / max(1e-9, total)), 1)


def git_commit() -> str | None:
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True,
                              check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return None
    return head + (" (+ uncommitted changes)" if git("status", "--porcelain") else "")


# ----------------------------------------------------------------------------- MLServer


def run_mlserver(args: argparse.Namespace, registry: Path, models: list[str], results: Results,
                 out: Path, tmp: Path) -> dict[str, Any]:
    """MLServer's cells, right after bench_e2e's; appended to results["cells"]."""
    venv = Path(args.mlserver_venv)
    venv = venv if venv.is_absolute() else ROOT / venv
    exe = venv / "bin" / "mlserver"
    if not exe.exists():
        reason = f"no MLServer at {exe} (make it with: bash benchmarks/setup_mlserver.sh)"
        print(f"# mlserver skipped: {reason}", flush=True)
        return {"status": "skipped", "reason": reason}
    versions = venv_versions(venv / "bin" / "python")
    if not versions.get("mlserver"):
        reason = (f"MLServer is not installed in {venv}"
                  + (f": {versions['error']}" if versions.get("error") else ""))
        print(f"# mlserver failed: {reason}", file=sys.stderr, flush=True)
        return {"status": "failed", "reason": reason}
    port, grpc_port = bench_e2e.free_port(), bench_e2e.free_port()
    settings = {"debug": False, "parallel_workers": 0, "host": "127.0.0.1",
                "http_port": port, "grpc_port": grpc_port, "metrics_endpoint": None,
                "gzip_enabled": False, "load_models_at_startup": True}
    repo = tmp / "mlserver-repo"
    repo.mkdir()
    (repo / "settings.json").write_text(json.dumps(settings, indent=2))
    for model in models:
        onnx = max((registry / model).glob("*/model.onnx"), key=lambda p: int(p.parent.name))
        (repo / model).mkdir()
        (repo / model / "model-settings.json").write_text(json.dumps({
            "name": model, "implementation": "mlserver_onnx.OnnxModel",
            "parameters": {"uri": str(onnx), "version": onnx.parent.name}}, indent=2))
    info: dict[str, Any] = {"status": "ok", "versions": versions, "settings": settings,
                            "runtime": "benchmarks/mlserver_onnx (onnxruntime, 1 thread)",
                            "interleaved": False}
    if not versions.get("httptools"):
        info["warning"] = ("httptools is not in the MLServer virtualenv: its uvicorn parses "
                           "HTTP with the pure-Python h11, slower than its best configuration")
        print(f"# mlserver: {info['warning']}", flush=True)
    cmd = ["env", f"PYTHONPATH={HERE}", str(exe), "start", str(repo)]
    url = f"http://127.0.0.1:{port}"
    cells: list[Cell] = results["cells"]
    log = out / "mlserver.log"
    print(f"# mlserver {versions['mlserver']} (uvloop {versions['uvloop']}) on core "
          f"{bench_e2e.SERVER_CPU}, after the interleaved runs (not interleaved)", flush=True)
    try:
        with bench_e2e.start(cmd, f"{url}/v2/health/ready", log) as proc:
            bodies = {(model, rows): bench_e2e.v2_body(sample_rows(registry, model, rows))
                      for model, _clients, rows in cases(results, models)}
            for (model, rows), body in bodies.items():
                check_answer(f"{url}/v2/models/{model}/infer", body, rows)
            rss_start = bench_e2e.rss_mb(proc.pid)
            for model, clients, rows in cases(results, models):
                target = f"{url}/v2/models/{model}/infer"
                runs = [bench_e2e.run_wrk(target, bodies[model, rows], clients, args.duration,
                                          tmp) for _ in range(args.repeats)]
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                cells.append({"model": model, "clients": clients, "rows": rows,
                              "server": "mlserver", **med, "runs": runs, "interleaved": False})
                print(f"| {model} | {rows} | {clients} | mlserver | {med['rps']:.0f} | "
                      f"{med['p50_ms']:.2f} | {med['p99_ms']:.2f} | errors {med['errors']:.0f} "
                      f"| wrk CPU {med['gen_cpu_pct']:.0f}% |", flush=True)
            results.setdefault("rss_mb", {})["mlserver"] = {
                "start": rss_start, "end": bench_e2e.rss_mb(proc.pid)}
    except (RuntimeError, OSError, ValueError) as e:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        print(f"# mlserver failed: {e}\n{tail}", file=sys.stderr, flush=True)
        return {**info, "status": "failed", "reason": str(e)[:500], "log_tail": tail}
    return info


_VERSIONS = """
import importlib.metadata as m, json
def v(d):
    try:
        return m.version(d)
    except m.PackageNotFoundError:
        return None
print(json.dumps({d: v(d) for d in DISTS}))
"""


def venv_versions(python: Path) -> dict[str, Any]:
    """Versions of MLServer and what its speed depends on, as that virtualenv sees them."""
    dists = ("mlserver", "onnxruntime", "uvloop", "httptools", "uvicorn", "numpy")
    proc = subprocess.run([str(python), "-c", _VERSIONS.replace("DISTS", repr(dists))],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip()[-300:]}
    return json.loads(proc.stdout)


def cases(results: Results, models: list[str]) -> list[tuple[str, int, int]]:
    """(model, clients, rows) of bench_e2e's cells, in its order, without duplicates."""
    seen = dict.fromkeys((c["model"], c["clients"], c["rows"]) for c in results["cells"]
                         if c["model"] in models)
    return list(seen)


def sample_rows(registry: Path, model: str, rows: int) -> Any:
    """The first sample row of the model's manifest, repeated `rows` times (as bench_e2e)."""
    import numpy as np

    manifest = max((registry / model).glob("*/manifest.json"), key=lambda p: int(p.parent.name))
    row = np.asarray(json.loads(manifest.read_text())["samples"]["input"][:1], np.float32)
    return np.repeat(row, rows, axis=0)


def check_answer(url: str, body: bytes, rows: int) -> None:
    """One request before timing: a 200 whose outputs have `rows` rows, or a ValueError."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        doc = json.loads(r.read())
    shapes = [o["shape"] for o in doc.get("outputs", [])]
    if not shapes or any(s[0] != rows for s in shapes):
        raise ValueError(f"unexpected answer from {url}: {str(doc)[:300]}")


if __name__ == "__main__":
    raise SystemExit(main())
