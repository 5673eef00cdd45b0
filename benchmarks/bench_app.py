"""In-process benchmark of the application's own cost per request, without HTTP or sockets.

    python benchmarks/bench_app.py [--model iris] [--concurrency 1,64] [--requests 12800]

Drives this server's ASGI app and the naive server's (benchmarks/naive_server.py) with the same
V2 JSON request from asyncio tasks on one uvloop loop, interleaved, and prints microseconds per
request (median of --repeats). No network, no uvicorn: what is left is decoding, validation,
routing, batching, ONNX Runtime, encoding and metrics, so small changes on the request path show
here long before they rise above the noise of an end-to-end run. Pin it to one core
(`taskset -c 0`) for steadier figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from naive_server import make_app  # noqa: E402

from serving.config import ServerConfig  # noqa: E402
from serving.http.app import create_app  # noqa: E402
from serving.registry.manifest import read_manifest  # noqa: E402


def _scope(path: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
        "query_string": b"", "http_version": "1.1", "scheme": "http", "root_path": "",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }


async def drive(app: Any, path: str, body: bytes, requests: int, concurrency: int) -> float:
    """Microseconds per request with `concurrency` clients sending back to back."""
    message = {"type": "http.request", "body": body, "more_body": False}
    statuses: list[int] = []

    class Cycle:
        """What uvicorn's `receive` is bound to: a request cycle with a `disconnected` flag,
        which the server reads instead of awaiting `http.disconnect` (http/disconnect.py)."""

        disconnected = False

        async def receive(self) -> dict[str, Any]:
            return message

    receive = Cycle().receive

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            statuses.append(msg["status"])

    scope = _scope(path, body)

    async def client(n: int) -> None:
        for _ in range(n):
            await app(dict(scope), receive, send)
            await asyncio.sleep(0)  # as a socket read would, let the others in

    per_client = max(1, requests // concurrency)
    t0 = time.perf_counter()
    await asyncio.gather(*(client(per_client) for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    if set(statuses) != {200}:
        raise RuntimeError(f"unexpected statuses {set(statuses)}")
    return elapsed / (per_client * concurrency) * 1e6


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="iris")
    ap.add_argument("--concurrency", default="1,64")
    ap.add_argument("--requests", type=int, default=12800)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--registry", help="registry with the example models (default: build one)")
    args = ap.parse_args()
    if args.registry:
        registry = Path(args.registry)
    else:
        from serving.packaging.examples import build_examples

        registry = Path(tempfile.mkdtemp(prefix="bench-app-")) / "registry"
        build_examples(registry, log=lambda _m: None)
    manifest = read_manifest(next((registry / args.model).glob("*/manifest.json")))
    x = np.asarray(manifest.samples["input"][:1], np.float32)
    body = orjson.dumps({"inputs": [{"name": "input", "shape": list(x.shape),
                                     "datatype": "FP32", "data": x.ravel().tolist()}]})
    path = f"/v2/models/{args.model}/infer"
    naive = make_app(registry)
    ours = create_app(ServerConfig(registry=str(registry), log_level="warning"))
    async with ours.starlette.router.lifespan_context(ours.starlette):
        while not ours.manager.loading_done:
            await asyncio.sleep(0.05)
        print(f"# {args.model}, {args.requests} requests a run, median of {args.repeats}, "
              "microseconds per request in process (no HTTP)")
        print("| concurrency | this server | naive | naive / this |")
        print("| --- | --- | --- | --- |")
        for conc in (int(c) for c in args.concurrency.split(",")):
            for app in (naive, ours):  # warm-up
                await drive(app, path, body, args.requests // 4, conc)
            runs: dict[str, list[float]] = {"ours": [], "naive": []}
            for _ in range(args.repeats):
                runs["naive"].append(await drive(naive, path, body, args.requests, conc))
                runs["ours"].append(await drive(ours, path, body, args.requests, conc))
            o, n = statistics.median(runs["ours"]), statistics.median(runs["naive"])
            print(f"| {conc} | {o:.1f} | {n:.1f} | {n / o:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))
