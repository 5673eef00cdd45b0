"""What a gRPC server itself allows on one core: bare servers whose ModelInfer handler answers
a constant, measured as bench_grpc.py measures ours (h2load on core 1, server on core 0).

    python benchmarks/grpc_ceiling.py [--clients 64] [--duration 4] [--repeats 3]

Modes, interleaved: `aio` (grpc.aio on uvloop, the handler on the loop), `sync` (grpcio's
synchronous server, the handler in its thread) and `sync+loop` (the synchronous server whose
handler hands a trivial coroutine to a uvloop loop thread and waits for it: the serving path's
shape without its work), and `ours` (serving/grpc_api's HTTP/2 server on uvloop, the handler a
task on the loop, as `serve` runs it). A server's figure against its mode's is what the work
behind the handler costs.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_e2e  # noqa: E402  (benchmarks/ is not a package)
import bench_grpc  # noqa: E402

MODES = ("aio", "sync", "sync+loop", "ours")


def serve_ours(answer: bytes, port: int) -> None:
    import uvloop

    from serving.grpc_api.connection import Connection

    class Reply:
        def SerializeToString(self) -> bytes:  # protobuf's name
            return answer

    reply = Reply()

    async def constant(_msg: bytes, _call: Any) -> Reply:
        return reply

    async def main() -> None:
        methods = {bench_grpc.INFER: (constant, bytes)}
        connections: set[Connection] = set()
        server = await asyncio.get_running_loop().create_server(
            lambda: Connection(methods, 1 << 26, connections), "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


def serve(mode: str, port: int) -> None:
    answer = bench_grpc.pb.ModelInferResponse(model_name="iris").SerializeToString()
    if mode == "ours":
        serve_ours(answer, port)
        return
    import grpc
    import uvloop

    address = f"127.0.0.1:{port}"

    async def constant(_msg: bytes, _context: Any) -> bytes:
        return answer

    def handlers(call: Any) -> Any:
        return grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(call)})

    if mode == "aio":
        async def main() -> None:
            server = grpc.aio.server()
            server.add_generic_rpc_handlers([handlers(constant)])
            server.add_insecure_port(address)
            await server.start()
            await server.wait_for_termination()

        uvloop.run(main())
        return
    loop = uvloop.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    def handler(msg: bytes, context: Any) -> bytes:
        if mode == "sync":
            return answer
        result: bytes = asyncio.run_coroutine_threadsafe(constant(msg, context), loop).result()
        return result

    server = grpc.server(ThreadPoolExecutor(256))
    server.add_generic_rpc_handlers([handlers(handler)])
    server.add_insecure_port(address)
    server.start()
    server.wait_for_termination()


def measure(mode: str, frame: bytes, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    import subprocess

    port = bench_e2e.free_port()
    cmd = bench_e2e.pinned(bench_e2e.SERVER_CPU,
                           [sys.executable, __file__, "--serve", mode, "--port", str(port)])
    proc = subprocess.Popen(cmd)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{mode}: the server did not start") from None
                time.sleep(0.1)
        return bench_grpc.run_h2load(f"127.0.0.1:{port}", frame, args.clients, args.duration, tmp)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return 0
    frame = bench_grpc.grpc_frame("iris", np.ones((1, 4), np.float32))
    runs: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for mode in MODES:
                runs[mode].append(measure(mode, frame, args, Path(tmp))["rps"])
    for mode, rs in runs.items():
        print(f"{mode}: {statistics.median(rs):.0f} calls/s at {args.clients} clients "
              f"(runs {', '.join(f'{r:.0f}' for r in rs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
