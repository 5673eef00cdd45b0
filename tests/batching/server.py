"""The batching tests' server: small onnx.helper models, each with its own `[batching]` table, and
the client helpers the tests share (tests/batching/conftest.py starts one server per session)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx
import numpy as np
import onnx
import orjson
from onnx import TensorProto, helper
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningServer

T = TypeVar("T")
Dim = int | str


# ---- models (onnx.helper) ----------------------------------------------------------------------


def _finish(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def identity(*inputs: tuple[str, Sequence[Dim]]) -> bytes:
    """One FP32 Identity per input: `x` -> `y_x`, same shape."""
    nodes, ins, outs = [], [], []
    for name, shape in inputs:
        ins.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        outs.append(helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, list(shape)))
        nodes.append(helper.make_node("Identity", [name], [f"y_{name}"]))
    return _finish(helper.make_graph(nodes, "identity", ins, outs))


def doubler_fixed() -> bytes:
    """No batch dimension: x [2, 3] -> y = 2x [2, 3]."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y_x"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y_x", TensorProto.FLOAT, [2, 3])],
        [two],
    )
    return _finish(graph)


TABLE = [0.0, 10.0, 20.0, 30.0, 40.0]


def lookup() -> bytes:
    """Gather from a 5-entry table: idx INT64 [N, 1] -> y FP32 [N, 1]; ORT fails out of range."""
    table = helper.make_tensor("table", TensorProto.FLOAT, [len(TABLE)], TABLE)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["y_idx"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["N", 1])],
        [helper.make_tensor_value_info("y_idx", TensorProto.FLOAT, ["N", 1])],
        [table],
    )
    return _finish(graph)


def batching(**keys: Any) -> str:
    """A model.toml with this `[batching]` table."""
    lines = ["[batching]"]
    for key, value in keys.items():
        lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else value}")
    return "\n".join(lines) + "\n"


ROW3 = identity(("x", ["N", 3]))
MODELS: dict[str, tuple[bytes, str]] = {
    # concurrency, max_batch_size and never splitting a request
    "batched": (ROW3, batching(max_batch_size=4, max_queue_delay_us=300_000)),
    "fill": (ROW3, batching(max_batch_size=4, max_queue_delay_us=10_000_000)),
    "one": (ROW3, batching(max_batch_size=1)),
    # max_queue_delay_us and preferred_batch_sizes
    "delayed": (ROW3, batching(max_batch_size=8, max_queue_delay_us=200_000,
                               preferred_batch_sizes=[4])),
    "together": (ROW3, batching(max_batch_size=8, max_queue_delay_us=1_000_000,
                                preferred_batch_sizes=[4])),
    "preferred": (ROW3, batching(max_batch_size=8, max_queue_delay_us=10_000_000,
                                 preferred_batch_sizes=[4])),
    "preferred48": (ROW3, batching(max_batch_size=8, max_queue_delay_us=10_000_000,
                                   preferred_batch_sizes=[4, 8])),
    "nodelay": (ROW3, batching(max_batch_size=8, max_queue_delay_us=0,
                               preferred_batch_sizes=[4])),
    # shapes that must not be mixed in one batch
    "ragged": (identity(("x", ["N", "M"])), batching(max_batch_size=16,
                                                      max_queue_delay_us=300_000)),
    "ragged3": (identity(("x", ["N", "M"])), batching(
        max_batch_size=16, max_queue_delay_us=10_000_000, preferred_batch_sizes=[3])),
    "pair": (identity(("a", ["N", "A"]), ("b", ["N", "B"])),
             batching(max_batch_size=8, max_queue_delay_us=500_000, preferred_batch_sizes=[2])),
    # no batching
    "fixed": (doubler_fixed(), batching(max_batch_size=8, max_queue_delay_us=10_000_000)),
    "off": (ROW3, batching(enabled=False, max_batch_size=8, max_queue_delay_us=10_000_000)),
    # queue full, deadlines, disconnects, failing runs
    "small_queue": (ROW3, batching(max_batch_size=64, max_queue_delay_us=1_000_000,
                                   max_queue_size=2, workers=1)),
    "deadline": (ROW3, batching(max_batch_size=8, max_queue_delay_us=1_000_000,
                                default_timeout_us=100_000)),
    "shorten": (ROW3, batching(max_batch_size=8, max_queue_delay_us=1_000_000)),
    "gone_head": (ROW3, batching(max_batch_size=8, max_queue_delay_us=1_500_000,
                                 preferred_batch_sizes=[2])),
    "gone_middle": (ROW3, batching(max_batch_size=8, max_queue_delay_us=1_500_000,
                                   preferred_batch_sizes=[3])),
    "lookup": (lookup(), batching(max_batch_size=8, max_queue_delay_us=2_000_000,
                                  preferred_batch_sizes=[2])),
}


# ---- client helpers ----------------------------------------------------------------------------


class Answer:
    """One HTTP answer, decoded."""

    def __init__(self, r: httpx.Response, elapsed: float) -> None:
        self.status = r.status_code
        self.headers = r.headers
        self.doc: dict[str, Any] = r.json()
        self.elapsed = elapsed

    @property
    def error(self) -> str:
        assert self.status != 200, self.doc
        return str(self.doc["error"])

    @property
    def batch_size(self) -> int:
        assert self.status == 200, self.doc
        return int(self.doc["parameters"]["batch_size"])

    def output(self, name: str) -> np.ndarray:
        assert self.status == 200, self.doc
        out = {o["name"]: o for o in self.doc["outputs"]}[name]
        return np.asarray(out["data"]).reshape(out["shape"])


def v2_body(inputs: dict[str, np.ndarray], parameters: dict[str, Any] | None = None) -> bytes:
    """A V2 JSON request; inputs are sent in the dict's order."""
    doc: dict[str, Any] = {"inputs": [
        {"name": n, "datatype": "INT64" if a.dtype == np.int64 else "FP32",
         "shape": list(a.shape), "data": a.ravel().tolist()}
        for n, a in inputs.items()
    ]}
    if parameters is not None:
        doc["parameters"] = parameters
    return orjson.dumps(doc)


async def infer(
    c: httpx.AsyncClient, model: str, inputs: dict[str, np.ndarray],
    parameters: dict[str, Any] | None = None, delay: float = 0.0,
) -> Answer:
    if delay:
        await asyncio.sleep(delay)
    started = time.monotonic()
    r = await c.post(f"/v2/models/{model}/infer", content=v2_body(inputs, parameters))
    return Answer(r, time.monotonic() - started)


def with_client(srv: RunningServer, fn: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=srv.url, timeout=30, limits=limits) as c:
            return await fn(c)

    return asyncio.run(main())


def concurrently(
    srv: RunningServer, model: str, requests: Sequence[dict[str, np.ndarray]],
    parameters: Sequence[dict[str, Any] | None] | None = None,
) -> list[Answer]:
    """Send all requests at once, each on its own connection; answers in request order."""
    params = parameters or [None] * len(requests)

    async def go(c: httpx.AsyncClient) -> list[Answer]:
        return list(await asyncio.gather(
            *(infer(c, model, x, p) for x, p in zip(requests, params, strict=True))))

    return with_client(srv, go)


def one(srv: RunningServer, model: str, inputs: dict[str, np.ndarray],
        parameters: dict[str, Any] | None = None) -> Answer:
    return concurrently(srv, model, [inputs], [parameters])[0]


def metric(srv: RunningServer, sample: str, **labels: str) -> float:
    """One sample of GET /metrics (0.0 when absent)."""
    text = httpx.get(f"{srv.url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def rows(n: int, width: int = 3, seed: float = 0.0) -> np.ndarray:
    """Distinct, exactly representable FP32 rows."""
    return (np.arange(n * width, dtype=np.float32).reshape(n, width) + np.float32(seed)) * 0.25
