"""What payload logging costs the server's core, without sockets: the app driven by ASGI calls.

    python benchmarks/bench_payload_inproc.py [--models iris,forest,digits] [--requests 32000]
                                              [--repeats 5]

In process, as `bench_app.py`: on a machine other work shares, wrk's throughput runs spread
by 10-30%, more than the cost to measure. Here each configuration runs in its own process
pinned to core 0, which builds the app (`create_app`, as `serving serve` does), starts it and
sends `--requests` V2 requests from 64 concurrent coroutines through the app's ASGI callable
(everything the server does but uvicorn's HTTP parsing and the socket writes), `--repeats`
times: CPU microseconds per request of the whole process and of the event loop's thread (the
rest is the payload writer thread), the median of the repeats after the first. `off` logs
nothing; `store` logs every request into the store of recent predictions only (no sink);
`100pct` also into a directory sink.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_e2e import ROOT, SERVER_CPU, pinned, sample_inputs, v2_body

MODES = {"off": {}, "1pct": {"payload_sample": 0.01, "payload_log": "SINK"},
         "store": {"payload_sample": 1.0},
         "100pct": {"payload_sample": 1.0, "payload_log": "SINK"}}


async def _drive(app: Any, path: str, body: bytes, n: int, repeats: int) -> list[list[float]]:
    started: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    events: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    await events.put({"type": "lifespan.startup"})

    async def lifespan_send(m: dict[str, str]) -> None:
        await started.put(m)

    life = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                   events.get, lifespan_send))
    await started.get()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 2), "headers": [(b"content-type", b"application/json"),
                                                     (b"content-length", str(len(body)).encode())]}
    message = {"type": "http.request", "body": body, "more_body": False}
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return message

    async def send(m: dict[str, Any]) -> None:
        if m["type"] == "http.response.start":
            status.append(m["status"])

    while not status or status[-1] != 200:  # the model loads in the background
        status.clear()
        await app(dict(scope), receive, send)
        await asyncio.sleep(0.05)

    async def client(k: int) -> None:
        for _ in range(k):
            await app(dict(scope), receive, send)

    out = []
    for _ in range(repeats):
        status.clear()
        cpu, loop_cpu = time.process_time(), time.thread_time()
        await asyncio.gather(*(client(n // 64) for _ in range(64)))
        done = len(status)
        assert status.count(200) == done, f"{done - status.count(200)} requests failed"
        out.append([(time.process_time() - cpu) / done * 1e6,
                     (time.thread_time() - loop_cpu) / done * 1e6])
    await events.put({"type": "lifespan.shutdown"})
    await life
    return out


def child(mode: str, model: str, registry: str, n: int, repeats: int, sink: str) -> None:
    """One configuration, in this process: its figures as JSON on stdout."""
    import uvloop

    from serving.config import ServerConfig
    from serving.http.app import create_app

    options = {k: sink if v == "SINK" else v for k, v in MODES[mode].items()}
    app = create_app(ServerConfig(registry=registry, **options))  # type: ignore[arg-type]
    body = v2_body(sample_inputs(Path(registry), [model])[model])
    runs = uvloop.run(_drive(app, f"/v2/models/{model}/infer", body, n, repeats))
    print(json.dumps(runs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="iris,forest,digits")
    ap.add_argument("--requests", type=int, default=32_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--registry", help="registry with the example models (default: build one)")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "MODEL"), help=argparse.SUPPRESS)
    ap.add_argument("--sink", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.registry, args.requests, args.repeats, args.sink)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-payload-inproc-") as tmp:
        registry = Path(args.registry) if args.registry else Path(tmp) / "registry"
        if not args.registry:
            sys.path.insert(0, str(ROOT))
            from serving.packaging.examples import build_examples

            build_examples(registry, log=lambda _m: None)
        print(f"# in process, core {SERVER_CPU}; {args.requests} requests from 64 coroutines, "
              f"median of repeats 2-{args.repeats}; load average "
              "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        print(f"{'model':<8} {'mode':<7} {'CPU us/req':>10} {'vs off':>7} {'loop':>6} "
              f"{'writer':>6}  runs (CPU us/req)")
        for model in args.models.split(","):
            base = 0.0
            for mode in MODES:
                cmd = pinned(SERVER_CPU, [
                    sys.executable, __file__, "--child", mode, model, "--registry",
                    str(registry), "--requests", str(args.requests), "--repeats",
                    str(args.repeats), "--sink", str(Path(tmp) / f"payload-{model}")])
                out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
                runs = json.loads(out.stdout.strip().splitlines()[-1])[1:]
                total = statistics.median(r[0] for r in runs)
                loop = statistics.median(r[1] for r in runs)
                base = base or total
                print(f"{model:<8} {mode:<7} {total:>10.1f} {total / base - 1:>+7.1%} "
                      f"{loop:>6.1f} {total - loop:>6.1f}  "
                      + " ".join(f"{r[0]:.1f}" for r in runs))
        print("# load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
