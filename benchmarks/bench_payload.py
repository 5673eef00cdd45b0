"""What payload logging costs: throughput with logging off, at 1% and at 100% sampling.

    python benchmarks/bench_payload.py [--models iris,forest,digits] [--clients 64]
                                       [--duration 5] [--repeats 3]

Three server configurations over the same example registry: `off` (no logging), `1pct` and
`100pct` (`--payload-sample 0.01` / `1` into a local directory sink: gzip JSON Lines segments).
Each runs pinned to core 0 and wrk to core 1, interleaved (off, 1pct, 100pct, off, ...),
`--repeats` times, each time in a fresh server process that serves every model in turn: two
identical servers kept running side by side differed by 5-6% over three interleaved runs each
(where a process's memory lands moves its speed), more than the cost measured at 1%. The
medians and each configuration's throughput relative to `off` are printed, then each repeat's
ratio to the off run of the same repeat (paired: a slow patch of the machine moves both), with the
server's CPU time per request (from /proc: on a machine other work shares this moves far less
than throughput does) and wrk's own CPU use (near 100% it, not the server, would be the
limit), then what each logging server wrote and dropped (a writer that fell behind would drop
records and hide its cost: the drop counts show whether it did), and the machine's load
average before and after (other work on the cores moves every figure).

`--flood` then measures inference on the 100% server (digits) while one client floods it with
iris feedback (batches of 1000 entries for 10000 logged ids), against the same without it.

`--tree NAME=PATH` (repeatable) compares code instead: `off`, then for each tree a server
logging every request run from that checkout (built in place: `python setup.py build_ext
--inplace` there), interleaved the same way; `--tree before=../before --tree after=.` puts a
change's cost before and after it side by side in one run, the only comparison this machine's
hour-to-hour drift allows.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
from bench_e2e import (  # the sibling benchmark's server handling and load-generator pinning
    LOAD_CPU,
    ROOT,
    SERVER_CPU,
    free_port,
    run_wrk,
    sample_inputs,
    start,
    v2_body,
)

SERVERS = {"off": [], "1pct": ["--payload-sample", "0.01"], "100pct": ["--payload-sample", "1"]}


def _metric(url: str, name: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {m.group(1) or "": float(m.group(2)) for m in re.finditer(
        rf"^{name}(?:{{reason=\"(\w+)\"}})? ([\d.e+]+)$", text, re.M)}


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pid: int, url: str, body: bytes, args: argparse.Namespace,
             tmp: Path) -> dict[str, float]:
    before = cpu_s(pid)
    r = run_wrk(url, body, args.clients, args.duration, tmp)
    r["cpu_us_per_req"] = (cpu_s(pid) - before) / max(1.0, r["rps"] * args.duration) * 1e6
    return r


class Flooder(threading.Thread):
    """Feedback as fast as one client sends it: batches of 1000 entries for the ids logged
    beforehand (after their first pass they are duplicates: parsed, looked up and counted)."""

    def __init__(self, url: str, ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.url, self.ids = url, ids
        self.stop = threading.Event()
        self.entries = 0

    def run(self) -> None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {int(LOAD_CPU)})
        bodies = [orjson.dumps({"feedback": [{"id": i, "truth": 0}
                                             for i in self.ids[at:at + 1000]]})
                  for at in range(0, len(self.ids), 1000)]  # built once: wrk shares the core
        with httpx.Client(base_url=self.url, timeout=30) as c:
            for body in itertools.cycle(bodies):
                if self.stop.is_set():
                    return
                r = c.post("/v2/models/iris/feedback", content=body)
                self.entries += 1000 if r.status_code == 200 else 0  # 503: over its share


def flood(pid: int, url: str, iris: bytes, digits: bytes, args: argparse.Namespace,
          tmp: Path) -> None:
    """Inference throughput (digits) on the 100pct server without and with a flood of iris
    feedback (the store of recent predictions is per model: digits' traffic keeps iris's)."""
    doc = orjson.loads(iris)
    ids = [f"flood-{i}" for i in range(10_000)]
    with httpx.Client(base_url=url, timeout=30) as c:
        for rid in ids:
            c.post("/v2/models/iris/infer", content=orjson.dumps({**doc, "id": rid}))
    print(f"# feedback flood (iris) against the 100pct server under load (digits, "
          f"{args.clients} clients)")
    runs: dict[str, list[dict[str, float]]] = {"quiet": [], "flood": []}
    entries = 0
    for _ in range(args.repeats):
        for phase in runs:
            f = Flooder(url, ids)
            if phase == "flood":
                f.start()
            runs[phase].append(measured(pid, f"{url}/v2/models/digits/infer", digits, args, tmp))
            f.stop.set()
            if phase == "flood":
                f.join()
            entries += f.entries
    for phase, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"{phase:<6} {med['rps']:>8.0f} req/s  p50 {med['p50_ms']:.2f} ms  p99 "
              f"{med['p99_ms']:.2f} ms  server CPU {med['cpu_us_per_req']:.1f} us/req  runs "
              + " ".join(f"{r['rps']:.0f}" for r in rs))
    print(f"# feedback entries joined during the floods: {entries} "
          f"({entries / (args.repeats * args.duration):.0f}/s; the rest answered 503)")


def configurations(specs: list[str]) -> tuple[dict[str, list[str]], dict[str, Path]]:
    """The servers to compare (name: extra arguments) and the checkouts they run from."""
    if not specs:
        return dict(SERVERS), {}
    servers: dict[str, list[str]] = {"off": []}
    trees = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        trees[name] = Path(path).resolve()
        servers[name] = SERVERS["100pct"]
    return servers, trees


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="iris,forest,digits")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--registry", help="registry with the example models (default: build one)")
    ap.add_argument("--flood", action="store_true", help="also measure a feedback flood")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                    help="compare checkouts: off, then each tree logging every request")
    args = ap.parse_args()
    if args.flood and args.tree:
        ap.error("--flood measures the 100pct server, which --tree replaces")
    return args


def main() -> int:
    args = parse_args()
    servers, trees = configurations(args.tree)
    tmp = Path(tempfile.mkdtemp(prefix="bench-payload-"))
    registry = Path(args.registry) if args.registry else tmp / "registry"
    if not args.registry:
        sys.path.insert(0, str(ROOT))
        from serving.packaging.examples import build_examples

        build_examples(registry, log=lambda _m: None)
    models = args.models.split(",")
    rows = sample_inputs(registry, models)
    ports = {n: free_port() for n in servers}
    print(f"# server on core {SERVER_CPU}, wrk on core {LOAD_CPU}; {args.clients} clients, "
          f"{args.duration}s per run, median of {args.repeats}, interleaved")
    print("# load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"{'model':<8} {'server':<7} {'req/s':>8} {'vs off':>7} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'CPU us/req':>10} {'vs off':>7} {'wrk CPU':>7}  runs (req/s)")
    bodies = {model: v2_body(rows[model]) for model in models}
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        model: {n: [] for n in servers} for model in models}
    counts: dict[str, list[tuple[float, dict[str, float]]]] = {n: [] for n in servers}
    for _ in range(args.repeats):
        for n, extra in servers.items():  # a fresh server each time: see the docstring
            with server(n, extra, registry, tmp, ports[n], trees.get(n)) as pid:
                for model in models:
                    url = f"http://127.0.0.1:{ports[n]}/v2/models/{model}/infer"
                    runs[model][n].append(measured(pid, url, bodies[model], args, tmp))
                if extra:
                    url = f"http://127.0.0.1:{ports[n]}"
                    counts[n].append((_metric(url, "serving_payload_written_total").get("", 0),
                                      _metric(url, "serving_payload_dropped_total")))
    for model in models:
        base = statistics.median(r["rps"] for r in runs[model]["off"])
        base_cpu = statistics.median(r["cpu_us_per_req"] for r in runs[model]["off"])
        for n in servers:
            rs = runs[model][n]
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            print(f"{model:<8} {n:<7} {med['rps']:>8.0f} {med['rps'] / base - 1:>+7.1%} "
                  f"{med['p50_ms']:>7.2f} {med['p99_ms']:>7.2f} "
                  f"{med['cpu_us_per_req']:>10.1f} "
                  f"{med['cpu_us_per_req'] / base_cpu - 1:>+7.1%} "
                  f"{med['gen_cpu_pct']:>6.0f}%  "
                  + " ".join(f"{r['rps']:.0f}" for r in rs))
    print("# paired: each repeat's throughput against the off server's of the same repeat, run "
          "just before it (median, lowest, highest)")
    logging = [n for n in servers if n != "off"]
    for model in models:
        for n in logging:
            ratios = sorted(r["rps"] / o["rps"] - 1
                            for r, o in zip(runs[model][n], runs[model]["off"], strict=True))
            print(f"{model:<8} {n:<7} {statistics.median(ratios):>+7.1%}  "
                  f"({ratios[0]:+.1%} .. {ratios[-1]:+.1%})")
    for n in logging:
        written = sum(w for w, _ in counts[n])
        dropped = {k: sum(d.get(k, 0) for _, d in counts[n]) for k in counts[n][0][1]}
        print(f"# {n}: {written:.0f} records written, dropped {dropped}")
    print("# load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if args.flood:
        with server("100pct", SERVERS["100pct"], registry, tmp, ports["100pct"]) as pid:
            flood(pid, f"http://127.0.0.1:{ports['100pct']}",
                  *(v2_body(x) for x in sample_inputs(registry, ["iris", "digits"]).values()),
                  args, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


@contextlib.contextmanager
def server(name: str, extra: list[str], registry: Path, tmp: Path,
           port: int, tree: Path | None = None) -> Iterator[int]:
    """A server of one configuration, pinned to the server core (run from `tree`, a checkout,
    when given): its pid."""
    cmd = [sys.executable, "-m", "serving", "serve", "--registry", str(registry),
           "--port", str(port), "--grpc-port", "0", "--log-level", "warning",
           "--drain-grace", "0",
           *(["--payload-log", str(tmp / f"payload-{name}")] if extra else []), *extra]
    if extra:
        cmd += ["--admin-open"]  # the flood's feedback
    with start(cmd, f"http://127.0.0.1:{port}/v2/health/ready",
               tmp / f"{name}.log", cwd=tree) as proc:
        yield proc.pid


if __name__ == "__main__":
    raise SystemExit(main())
