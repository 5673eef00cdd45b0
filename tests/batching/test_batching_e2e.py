"""The dynamic batcher's semantics (Triton's names and meaning), observed through a real server.

One server per module over a registry of small onnx.helper models, each with its own
`[batching]` table. What a request can observe: its status, its JSON error, its headers, its
answer and `parameters.batch_size` (the rows of the batch it ran in). Times are checked only as
generous behaviour bounds (did it wait for the delay or not), never as speed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import onnx
import orjson
import pytest
from onnx import TensorProto, helper
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningServer, run_server
from tests.e2e.models import publish

pytestmark = pytest.mark.e2e  # real server processes (the slow lane)

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


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real server over a registry holding every model above."""
    root: Path = tmp_path_factory.mktemp("batching-registry")
    for name, (onnx_bytes, toml) in MODELS.items():
        publish(root, name, onnx_bytes, toml)
    with run_server(root, tmp_path_factory.mktemp("batching-server")) as s:
        yield s


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


# ---- batching, max_batch_size, no splitting ----------------------------------------------------


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(srv) -> None:
    rng = np.random.default_rng(7)
    sizes = [int(n) for n in rng.integers(1, 4, size=30)]  # 1..3 rows, max_batch_size is 4
    xs = [rows(n, seed=100 * i) for i, n in enumerate(sizes)]
    answers = concurrently(srv, "batched", [{"x": x} for x in xs])
    for x, a in zip(xs, answers, strict=True):
        assert a.status == 200, a.doc
        np.testing.assert_array_equal(a.output("y_x"), x)  # its own rows, all of them
        assert len(x) <= a.batch_size <= 4  # never split, never above max_batch_size
    assert max(a.batch_size for a in answers) > 1


def test_request_with_more_rows_than_max_batch_size_is_400(srv) -> None:
    a = one(srv, "batched", {"x": rows(5)})
    assert a.status == 400
    assert "max_batch_size" in a.error
    assert one(srv, "batched", {"x": rows(4)}).batch_size == 4  # exactly the limit is fine


def test_max_batch_size_one_still_limits_rows_per_request(srv) -> None:
    # README: max_batch_size is "also the most rows one request may carry"; Triton rejects a
    # batch-2 request to a max_batch_size 1 model.
    a = one(srv, "one", {"x": rows(2)})
    assert a.status == 400, a.doc
    assert "max_batch_size" in a.error


def test_batch_taken_at_max_batch_size_without_waiting_for_the_delay(srv) -> None:
    # delay 10 s, no preferred sizes: four one-row requests fill max_batch_size (4) and go.
    xs = [rows(1, seed=i) for i in range(4)]
    started = time.monotonic()
    answers = concurrently(srv, "fill", [{"x": x} for x in xs])
    assert time.monotonic() - started < 5
    for x, a in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(a.output("y_x"), x)
        assert a.batch_size == 4


# ---- max_queue_delay_us and preferred_batch_sizes ----------------------------------------------


def test_lone_request_waits_about_the_queue_delay(srv) -> None:
    a = one(srv, "delayed", {"x": rows(1)})  # delay 200 ms, preferred [4]
    assert a.batch_size == 1
    assert 0.15 <= a.elapsed < 5


def test_requests_sent_within_the_delay_run_together(srv) -> None:
    xs = [rows(1, seed=i) for i in range(3)]  # delay 1 s, preferred [4]: three wait together
    answers = concurrently(srv, "together", [{"x": x} for x in xs])
    for x, a in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(a.output("y_x"), x)
        assert a.batch_size == 3


@pytest.mark.parametrize("model", [
    pytest.param("preferred", id="preferred-4"),
    pytest.param("preferred48", id="preferred-4-8"),  # 4 is preferred even though 8 could come
])
def test_preferred_batch_size_runs_without_waiting_for_the_delay(srv, model: str) -> None:
    xs = [rows(1, seed=i) for i in range(4)]  # delay 10 s
    started = time.monotonic()
    answers = concurrently(srv, model, [{"x": x} for x in xs])
    assert time.monotonic() - started < 5
    for x, a in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(a.output("y_x"), x)
        assert a.batch_size == 4


def test_zero_delay_never_waits(srv) -> None:
    # preferred [4] but delay 0: a lone request is not held back for company.
    for i in range(3):
        a = one(srv, "nodelay", {"x": rows(1, seed=i)})
        np.testing.assert_array_equal(a.output("y_x"), rows(1, seed=i))
        assert a.batch_size == 1
        assert a.elapsed < 5


# ---- shapes ------------------------------------------------------------------------------------


def test_requests_with_different_non_batch_dims_are_not_mixed(srv) -> None:
    widths = [2, 3, 5, 2, 3, 5, 2, 3, 5]
    xs = [rows(1 + i % 2, width=m, seed=10 * i) for i, m in enumerate(widths)]
    answers = concurrently(srv, "ragged", [{"x": x} for x in xs])
    rows_of_width = {m: sum(len(x) for x in xs if x.shape[1] == m) for m in set(widths)}
    for x, a in zip(xs, answers, strict=True):
        assert a.status == 200, a.doc
        np.testing.assert_array_equal(a.output("y_x"), x)
        assert len(x) <= a.batch_size <= rows_of_width[x.shape[1]]


def test_requests_with_the_same_variable_dims_are_batched(srv) -> None:
    xs = [rows(1, width=4, seed=i) for i in range(3)]  # preferred [3]
    answers = concurrently(srv, "ragged3", [{"x": x} for x in xs])
    for x, a in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(a.output("y_x"), x)
        assert a.batch_size == 3


def test_shapes_are_compared_per_input_name_not_per_position(srv) -> None:
    # Two inputs a [N, A] and b [N, B]. The first request sends a (1x2) then b (1x3); the second
    # lists b first: b (1x2), a (1x3). Their shapes differ input by input, so they must not be
    # gathered into one batch, whatever order the client listed the inputs in.
    first = {"a": rows(1, width=2, seed=1), "b": rows(1, width=3, seed=2)}
    second = {"b": rows(1, width=2, seed=3), "a": rows(1, width=3, seed=4)}
    answers = concurrently(srv, "pair", [first, second])
    for x, a in zip((first, second), answers, strict=True):
        assert a.status == 200, a.doc
        np.testing.assert_array_equal(a.output("y_a"), x["a"])
        np.testing.assert_array_equal(a.output("y_b"), x["b"])


# ---- models that run unbatched -----------------------------------------------------------------


def test_model_without_batch_dimension_runs_unbatched(srv) -> None:
    # [batching] asks for a 10 s delay; a model with no batch dimension cannot batch, so it
    # neither waits nor mixes requests.
    xs = [rows(2, seed=i) for i in range(6)]
    started = time.monotonic()
    answers = concurrently(srv, "fixed", [{"x": x} for x in xs])
    assert time.monotonic() - started < 5
    for x, a in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(a.output("y_x"), 2 * x)
        assert a.batch_size == 1
    wrong = one(srv, "fixed", {"x": rows(3)})
    assert wrong.status == 400
    assert "[2, 3]" in wrong.error


def test_batching_disabled_runs_each_request_alone(srv) -> None:
    sizes = [1, 2, 3, 1, 2, 3]
    xs = [rows(n, seed=i) for i, n in enumerate(sizes)]
    started = time.monotonic()
    answers = concurrently(srv, "off", [{"x": x} for x in xs])
    assert time.monotonic() - started < 5  # its 10 s delay does not apply
    for x, a in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(a.output("y_x"), x)
        assert a.batch_size == len(x)


# ---- queue full --------------------------------------------------------------------------------


def test_full_queue_answers_503_with_retry_after_then_serves(srv) -> None:
    # workers = 1, max_queue_size = 2, delay 1 s: the first two requests sit in the queue
    # waiting for company, the rest find it full and are refused at once.
    xs = [rows(1, seed=i) for i in range(8)]
    answers = concurrently(srv, "small_queue", [{"x": x} for x in xs])
    ok = [(x, a) for x, a in zip(xs, answers, strict=True) if a.status == 200]
    refused = [a for a in answers if a.status != 200]
    assert ok
    for x, a in ok:
        np.testing.assert_array_equal(a.output("y_x"), x)
        assert a.batch_size <= 2  # a batch comes out of a queue that never holds more than 2
    assert refused
    for a in refused:
        assert a.status == 503
        assert "queue is full" in a.error
        assert "small_queue" in a.error
        assert a.headers["retry-after"].isdigit()
    after = one(srv, "small_queue", {"x": rows(1, seed=99)})
    np.testing.assert_array_equal(after.output("y_x"), rows(1, seed=99))


# ---- deadlines ---------------------------------------------------------------------------------


def assert_timed_out(a: Answer, model: str) -> None:
    assert a.status == 503, a.doc
    assert "timed out in queue" in a.error
    assert model in a.error
    assert "retry-after" in a.headers
    assert a.elapsed < 5


def test_default_timeout_expires_in_queue_and_request_cannot_lengthen_it(srv) -> None:
    # default_timeout_us 100 ms, delay 600 ms: the deadline passes while the request waits.
    answers = concurrently(srv, "deadline", [{"x": rows(1)}, {"x": rows(1, seed=1)}],
                           [None, {"timeout": 10_000_000}])
    for a in answers:
        assert_timed_out(a, "deadline")


def test_request_timeout_shortens_the_deadline(srv) -> None:
    # No model default; delay 600 ms. Only the request asking for 100 ms times out.
    xs = [rows(1, seed=i) for i in range(3)]
    answers = concurrently(srv, "shorten", [{"x": x} for x in xs],
                           [{"timeout": 100_000}, None, {"timeout": 5_000_000}])
    assert_timed_out(answers[0], "shorten")
    for x, a in zip(xs[1:], answers[1:], strict=True):
        np.testing.assert_array_equal(a.output("y_x"), x)


def test_timeout_parameter_must_be_a_non_negative_integer(srv) -> None:
    a = one(srv, "shorten", {"x": rows(1)}, {"timeout": -5})
    assert a.status == 400
    assert "timeout" in a.error


# ---- client disconnects ------------------------------------------------------------------------


async def _give_up(srv: RunningServer, model: str, x: np.ndarray, delay: float = 0.0) -> None:
    """Send a request and hang up after 0.5 s, while it is still queued."""
    await asyncio.sleep(delay)
    async with httpx.AsyncClient(base_url=srv.url, timeout=0.5) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post(f"/v2/models/{model}/infer", content=v2_body({"x": x}))


def test_disconnected_request_at_the_head_of_the_queue_is_dropped(srv) -> None:
    # preferred [2], delay 1.5 s. The next request has 2 rows: alone it makes the preferred size
    # and runs at once; were the gone request's row still queued, they would run as 3 rows.
    async def go(c: httpx.AsyncClient) -> Answer:
        await _give_up(srv, "gone_head", rows(1, seed=1))
        return await infer(c, "gone_head", {"x": rows(2, seed=2)}, delay=0.3)

    a = with_client(srv, go)
    np.testing.assert_array_equal(a.output("y_x"), rows(2, seed=2))
    assert a.batch_size == 2
    # The server counted the drop, and ran only the next request's two rows.
    assert metric(srv, "serving_rejected_requests_total", model="gone_head",
                  reason="cancelled") == 1
    assert metric(srv, "serving_batch_rows_total", model="gone_head") == 2


def test_disconnected_request_behind_the_head_is_not_run(srv) -> None:
    # preferred [3], delay 1.5 s: first (waits), gone (hangs up at 0.5 s), last. Three queued
    # rows make the preferred size, but the gone client's row must not be run with the others.
    async def go(c: httpx.AsyncClient) -> list[Answer]:
        first = asyncio.ensure_future(infer(c, "gone_middle", {"x": rows(1, seed=1)}))
        await _give_up(srv, "gone_middle", rows(1, seed=2), delay=0.1)
        last = await infer(c, "gone_middle", {"x": rows(1, seed=3)}, delay=0.3)
        return [await first, last]

    answers = with_client(srv, go)
    for seed, a in zip((1, 3), answers, strict=True):
        np.testing.assert_array_equal(a.output("y_x"), rows(1, seed=seed))
        assert a.batch_size <= 2
    assert metric(srv, "serving_rejected_requests_total", model="gone_middle",
                  reason="cancelled") == 1
    assert metric(srv, "serving_batch_rows_total", model="gone_middle") == 2


# ---- failing runs ------------------------------------------------------------------------------


def idx(*values: int) -> dict[str, np.ndarray]:
    return {"idx": np.asarray(values, dtype=np.int64).reshape(-1, 1)}


def test_failing_batch_answers_500_and_the_worker_survives(srv) -> None:
    # Index 7 is out of the table's range: ONNX Runtime fails the batch it runs in.
    for _ in range(2):
        answers = concurrently(srv, "lookup", [idx(1), idx(7)])  # one batch (preferred [2])
        for a in answers:
            assert a.status == 500, a.doc
            assert "lookup" in a.error
        good = one(srv, "lookup", idx(2, 4))
        np.testing.assert_array_equal(good.output("y_idx"), [[TABLE[2]], [TABLE[4]]])
        assert good.batch_size == 2
