"""Overload benchmark: 1000 keep-alive connections on the digits MLP, ours vs the naive server.

    python benchmarks/bench_overload.py [--rounds 5] [--duration 15] [--connections 1000]
                                        [--servers ours,naive] [--timeout-us 0]
                                        [--py-spy DIR] [--json results.json]

Each round starts a FRESH server of each kind in turn (interleaved: ours, naive, ours, ...),
pinned to core 0, and drives it with wrk (one thread, closed loop, keep-alive) pinned to core 1
for `--duration` seconds. Per round it prints p50/p99/max latency, requests answered, non-2xx
answers, socket errors (connect/read/write/timeout), the server's resident-memory growth and the
generator's CPU use; then a summary per server. `--timeout-us N` sets `default_timeout_us` on
our digits model: requests past their deadline should get fast 503s (counted as non-2xx) instead
of a latency tail. `--py-spy DIR` records a py-spy profile of each of our rounds there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from bench_e2e import (  # the sibling benchmark's server handling and load-generator pinning
    HERE,
    LOAD_CPU,
    ROOT,
    SERVER_CPU,
    _start_naive,
    free_port,
    pinned,
    rss_mb,
    start,
    v2_body,
)

MODEL = "digits"
BASELINE = ""  # --baseline: a checkout of another revision, run as the server "baseline"

_LUA = """\
wrk.method = "POST"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("P50 %d\\nP99 %d\\nMAX %d\\nREQ %d\\nNON2XX %d\\n",
    latency:percentile(50), latency:percentile(99), latency.max, summary.requests, e.status))
  io.write(string.format("CONNECT %d\\nREAD %d\\nWRITE %d\\nTIMEOUT %d\\n",
    e.connect, e.read, e.write, e.timeout))
end
"""


_TCP_COUNTERS = ("TcpExt:ListenOverflows", "Tcp:RetransSegs", "TcpExt:TCPTimeouts")


def tcp_counters() -> dict[str, int]:
    """The kernel's TCP counters that tell an accept-queue overflow or retransmissions (Linux;
    machine-wide, so only a delta over a quiet round means much)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for name in ("/proc/net/netstat", "/proc/net/snmp"):
            lines = Path(name).read_text().splitlines()
            for keys, values in zip(lines[::2], lines[1::2], strict=False):
                ks, vs = keys.split(), values.split()
                out.update({ks[0] + k: int(v) for k, v in zip(ks[1:], vs[1:], strict=False)
                            if ks[0] + k in _TCP_COUNTERS})
    return out


def run_wrk(url: str, body: bytes, connections: int, duration: int, tmp: Path,
            timeout_s: int) -> dict[str, float]:
    """One closed-loop wrk run against `url`: latency, counts and the generator's CPU use."""
    body_path = tmp / "body.json"
    body_path.write_bytes(body)
    lua = tmp / "overload.lua"
    lua.write_text(_LUA.format(body=body_path))
    cmd = pinned(LOAD_CPU, ["wrk", "-t1", f"-c{connections}", f"-d{duration}s",
                            f"--timeout={timeout_s}s", "-s", str(lua), url])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(out)

    def field(name: str) -> int:
        m = re.search(rf"^{name} (\d+)$", out, re.M)
        if m is None:
            raise RuntimeError(f"wrk printed no {name}:\n{out}")
        return int(m.group(1))

    return {
        "p50_ms": field("P50") / 1e3, "p99_ms": field("P99") / 1e3, "max_ms": field("MAX") / 1e3,
        "requests": field("REQ"), "non2xx": field("NON2XX"),
        "socket_errors": sum(field(k) for k in ("CONNECT", "READ", "WRITE", "TIMEOUT")),
        "timeouts": field("TIMEOUT"),
        "gen_cpu_pct": (usage.ru_utime + usage.ru_stime) / duration * 100,
    }


def _registries(base: Path, tmp: Path, timeout_us: int) -> dict[str, Path]:
    """The registry as built, and a copy with `default_timeout_us` set when asked for."""
    if not timeout_us:
        return {"ours": base, "naive": base, "baseline": base}
    deadline = tmp / "registry-deadline"
    shutil.copytree(base, deadline)
    toml = deadline / MODEL / "model.toml"
    toml.write_text(re.sub(r"default_timeout_us = \d+", f"default_timeout_us = {timeout_us}",
                           toml.read_text()))
    return {"ours": deadline, "naive": base, "baseline": deadline}


@contextlib.contextmanager
def _server(kind: str, registry: Path, port: int, tmp: Path, log: Path
            ) -> Iterator[subprocess.Popen[bytes]]:
    url = f"http://127.0.0.1:{port}"
    if kind == "naive":
        with _start_naive([sys.executable, str(HERE / "naive_server.py"), str(registry),
                           str(port)], url, tmp) as proc:
            yield proc
        return
    # SERVING_GRPC_PORT=0: no gRPC (its default port would be shared; an older baseline
    # checkout without gRPC ignores the variable)
    cmd = ["env", "SERVING_GRPC_PORT=0", sys.executable, "-m", "serving", "serve", "--registry",
           str(registry), "--port", str(port), "--log-level", "warning", "--drain-grace", "0"]
    if kind == "baseline":  # another checkout's package, not the one in the current directory
        cmd = ["env", "SERVING_GRPC_PORT=0", f"PYTHONPATH={BASELINE}", sys.executable, "-P",
               *cmd[3:]]
    with start(cmd, f"{url}/v2/health/ready", log) as proc:
        yield proc


def one_round(kind: str, registry: Path, body: bytes, args: argparse.Namespace, tmp: Path,
              index: int) -> dict[str, float]:
    """A fresh server of `kind`, driven for the round's duration; its figures."""
    port = free_port()
    with _server(kind, registry, port, tmp, tmp / f"{kind}-{index}.log") as proc:
        rss0 = rss_mb(proc.pid)
        tcp0 = tcp_counters()
        spy = None
        if args.py_spy and kind != "naive" and shutil.which("py-spy"):
            out = Path(args.py_spy) / f"{kind}-round{index}.speedscope.json"
            spy = subprocess.Popen(
                ["py-spy", "record", "--pid", str(proc.pid), "--rate", "200", "--format",
                 "speedscope", "--output", str(out), "--duration", str(args.duration)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer"
        r = run_wrk(url, body, args.connections, args.duration, tmp, args.wrk_timeout)
        r["rss_growth_mb"] = rss_mb(proc.pid) - rss0
        tcp1 = tcp_counters()
        r["listen_overflows"] = tcp1.get(_TCP_COUNTERS[0], 0) - tcp0.get(_TCP_COUNTERS[0], 0)
        r["tcp_timeouts"] = tcp1.get(_TCP_COUNTERS[2], 0) - tcp0.get(_TCP_COUNTERS[2], 0)
        if spy is not None:
            spy.wait(60)
    return r


def _print_round(index: int, kind: str, r: dict[str, float]) -> None:
    print(f"| {index} | {kind} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.0f} | "
          f"{r['requests']:.0f} | {r['non2xx']:.0f} | {r['socket_errors']:.0f} | "
          f"{r['rss_growth_mb']:+.1f} | {r['gen_cpu_pct']:.0f}% | {r['listen_overflows']:.0f} | "
          f"{r['tcp_timeouts']:.0f} |", flush=True)


def _print_summary(runs: dict[str, list[dict[str, float]]]) -> None:
    print("\n| server | rounds | median p99 ms | worst p99 ms | rounds p99 > 1 s | worst max ms "
          "| median requests | non-2xx | socket errors | worst RSS growth MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind, rs in runs.items():
        p99 = [r["p99_ms"] for r in rs]
        print(f"| {kind} | {len(rs)} | {statistics.median(p99):.1f} | {max(p99):.1f} | "
              f"{sum(p > 1000 for p in p99)} | {max(r['max_ms'] for r in rs):.0f} | "
              f"{statistics.median(r['requests'] for r in rs):.0f} | "
              f"{sum(r['non2xx'] for r in rs):.0f} | {sum(r['socket_errors'] for r in rs):.0f} | "
              f"{max(r['rss_growth_mb'] for r in rs):.1f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=15, help="seconds per round and server")
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--servers", default="ours,naive",
                    help="any of ours, naive, baseline (interleaved in this order)")
    ap.add_argument("--baseline", default="",
                    help="a checkout of another revision (with its compiled kernels) for the "
                         "'baseline' server: A/B a change within one run")
    ap.add_argument("--timeout-us", type=int, default=0,
                    help="default_timeout_us for our digits model (0: no deadline)")
    ap.add_argument("--wrk-timeout", type=int, default=10,
                    help="wrk counts a request slower than this (s) as a socket timeout")
    ap.add_argument("--registry", help="registry with the example models (default: build one)")
    ap.add_argument("--py-spy", metavar="DIR", help="record a py-spy profile of our rounds here")
    ap.add_argument("--json", help="write every round's figures here")
    args = ap.parse_args()
    global BASELINE
    BASELINE = str(Path(args.baseline).resolve()) if args.baseline else ""
    if "baseline" in args.servers.split(",") and not BASELINE:
        print("--servers baseline needs --baseline DIR", file=sys.stderr)
        return 2
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="overload-"))
    sys.path.insert(0, str(ROOT))
    base = Path(args.registry) if args.registry else tmp / "registry"
    if not args.registry:
        from serving.packaging.examples import build_examples

        build_examples(base, log=lambda _m: None)
    from serving.registry.manifest import read_manifest

    registries = _registries(base, tmp, args.timeout_us)
    manifest = read_manifest(next((base / MODEL).glob("*/manifest.json")))
    body = v2_body(np.asarray(manifest.samples["input"][:1], np.float32))
    if args.py_spy:
        Path(args.py_spy).mkdir(parents=True, exist_ok=True)
    kinds = args.servers.split(",")
    print(f"# {args.connections} keep-alive connections, {MODEL}, {args.duration}s per round, "
          f"{args.rounds} rounds interleaved; server on core {SERVER_CPU}, wrk on core "
          f"{LOAD_CPU}; default_timeout_us={args.timeout_us} (ours)")
    print("| round | server | p50 ms | p99 ms | max ms | requests | non-2xx | socket errors | "
          "RSS growth MB | wrk CPU | listen overflows | TCP timeouts |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    for i in range(1, args.rounds + 1):
        for kind in kinds:
            r = one_round(kind, registries[kind], body, args, tmp, i)
            runs[kind].append(r)
            _print_round(i, kind, r)
    _print_summary(runs)
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
