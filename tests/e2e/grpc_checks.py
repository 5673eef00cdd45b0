"""Client-side checks that tests/e2e/test_grpc.py runs in a child process.

tritonclient.grpc and KServe's SDK each register the `inference.*` protobuf messages in
protobuf's default pool, so one process can import only one of them (the second import fails
with "duplicate symbol"), and tests/deploy imports KServe. So these functions run in a spawned
child with its own pool: a failed assert comes back to the test with its traceback.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

DATATYPES = ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
             "FP16", "FP32", "FP64", "BYTES"]
IRIS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], np.float32)


def _sample(dt: str, rows: int = 3) -> np.ndarray:
    if dt == "BYTES":
        return np.array([[f"r{i}c{j}é".encode() for j in range(2)] for i in range(rows)],
                        dtype=np.object_)
    if dt == "BOOL":
        return np.array([[True, False]] * rows)
    from tritonclient.utils import triton_to_np_dtype

    info = np.iinfo if dt[0] in "IU" else np.finfo
    dtype = triton_to_np_dtype(dt)
    top = info(dtype).max
    return np.array([[0, top], [1, 2], [top // 2 if dt[0] in "IU" else 0.5, 3]][:rows], dtype)


def _client(address: str) -> Any:
    import tritonclient.grpc as g

    return g.InferenceServerClient(address)


def _code(call: Any) -> tuple[str, str]:
    """(status code name, message) of a call that must fail."""
    from tritonclient.utils import InferenceServerException

    try:
        call()
    except InferenceServerException as exc:
        return str(exc.status()).removeprefix("StatusCode."), exc.message() or ""
    raise AssertionError("the call succeeded")


def every_datatype_raw(address: str) -> None:
    """alltypes (an identity per datatype) round-trips every datatype through raw contents."""
    import tritonclient.grpc as g

    c = _client(address)
    inputs, outputs = [], []
    for dt in DATATYPES:
        x = g.InferInput(f"x_{dt}", [3, 2], dt)
        x.set_data_from_numpy(_sample(dt))
        inputs.append(x)
        outputs.append(g.InferRequestedOutput(f"y_{dt}"))
    result = c.infer("alltypes", inputs, outputs=outputs)
    for dt in DATATYPES:
        got = result.as_numpy(f"y_{dt}")
        assert got.shape == (3, 2), (dt, got.shape)
        np.testing.assert_array_equal(got, _sample(dt), err_msg=dt)
        assert result.get_output(f"y_{dt}").datatype == dt


FIELDS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
          "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
          "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
          "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def every_datatype_typed(address: str) -> None:
    """`typed` (an identity per datatype but FP16, which has no typed field) round-trips every
    datatype through typed `contents`, built with tritonclient's own messages. FP16 in typed
    form, and raw contents for some inputs only, are refused."""
    import tritonclient.grpc as g
    from tritonclient.grpc import service_pb2 as pb

    c = _client(address)
    req = pb.ModelInferRequest(model_name="typed", id="typed")
    for dt, field in FIELDS.items():
        t = req.inputs.add(name=f"x_{dt}", datatype=dt, shape=[3, 2])
        getattr(t.contents, field).extend(_sample(dt).ravel().tolist())
    result = g.InferResult(c._client_stub.ModelInfer(req))
    for dt in FIELDS:
        np.testing.assert_array_equal(result.as_numpy(f"y_{dt}"), _sample(dt), err_msg=dt)

    def refused(req: Any) -> str:
        try:
            c._client_stub.ModelInfer(req)
        except Exception as exc:  # grpc.RpcError
            assert exc.code().name == "INVALID_ARGUMENT", exc  # type: ignore[attr-defined]
            return str(exc.details())  # type: ignore[attr-defined]
        raise AssertionError("accepted")

    fp16 = pb.ModelInferRequest(model_name="alltypes")
    fp16.inputs.add(name="x_FP16", datatype="FP16", shape=[1, 2])
    assert "raw_input_contents" in refused(fp16)
    req.raw_input_contents.append(_sample("BOOL").tobytes())
    assert "raw_input_contents has 1 entries for 12 inputs" in refused(req)
    short = pb.ModelInferRequest(model_name="typed")
    short.inputs.add(name="x_INT8", datatype="INT8", shape=[1, 2]).contents.int_contents.extend(
        [1, 300])
    assert "out of range" in refused(short)


def iris_typed_matches_raw(address: str) -> None:
    """iris through typed contents answers as through raw contents."""
    import tritonclient.grpc as g
    from tritonclient.grpc import service_pb2 as pb

    c = _client(address)
    x = g.InferInput("input", list(IRIS.shape), "FP32")
    x.set_data_from_numpy(IRIS)
    raw = c.infer("iris", [x])
    req = pb.ModelInferRequest(model_name="iris", id="t1")
    t = req.inputs.add(name="input", datatype="FP32", shape=list(IRIS.shape))
    t.contents.fp32_contents.extend(IRIS.ravel().tolist())
    typed = c._client_stub.ModelInfer(req)
    assert typed.id == "t1" and typed.model_version == "1"
    labels = np.frombuffer(typed.raw_output_contents[0], np.int64)
    np.testing.assert_array_equal(labels, raw.as_numpy("label"))
    np.testing.assert_array_equal(labels, [0, 2, 1])


def outputs_and_classification(address: str) -> None:
    import tritonclient.grpc as g

    c = _client(address)
    x = g.InferInput("input", list(IRIS.shape), "FP32")
    x.set_data_from_numpy(IRIS)
    only = c.infer("iris", [x], outputs=[g.InferRequestedOutput("probabilities")])
    assert [o.name for o in only.get_response().outputs] == ["probabilities"]
    assert only.as_numpy("label") is None
    top = c.infer("iris", [x], outputs=[g.InferRequestedOutput("probabilities", class_count=2)])
    classes = top.as_numpy("probabilities")
    assert classes.shape == (3, 2)
    assert classes[0, 0].decode().endswith(":0:setosa"), classes
    assert classes[1, 0].decode().split(":")[1] == "2"
    code, message = _code(lambda: c.infer("iris", [x], outputs=[g.InferRequestedOutput("nope")]))
    assert code == "INVALID_ARGUMENT" and "nope" in message, (code, message)


def metadata_config_statistics(address: str) -> None:
    c = _client(address)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("iris") and c.is_model_ready("iris", "1")
    meta = c.get_server_metadata(as_json=True)
    assert "classification" in meta["extensions"]
    model = c.get_model_metadata("iris", as_json=True)
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "4"]}]
    config = c.get_model_config("iris", as_json=True)["config"]
    assert config["max_batch_size"] > 0 and config["input"][0]["dims"] == ["4"]
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["output"][0]["data_type"] == "TYPE_INT64"
    stats = c.get_inference_statistics("iris", as_json=True)["model_stats"]
    assert stats and stats[0]["name"] == "iris"
    code, _ = _code(lambda: c.get_model_metadata("nope"))
    assert code == "NOT_FOUND"
    code, _ = _code(lambda: c.is_model_ready("iris", "7"))
    assert code == "NOT_FOUND"


def repository(address: str, token: str) -> None:
    """The index, load and unload behind the admin token, passed as metadata."""
    c = _client(address)
    code, message = _code(lambda: c.get_model_repository_index())
    assert code == "UNAUTHENTICATED" and "admin token" in message, (code, message)
    code, _ = _code(lambda: c.unload_model("iris", headers={"authorization": "Bearer wrong"}))
    assert code == "UNAUTHENTICATED"
    auth = {"authorization": f"Bearer {token}"}
    index = c.get_model_repository_index(headers=auth, as_json=True)["models"]
    assert {"name": "iris", "version": "1", "state": "READY"} in index, index
    c.unload_model("iris", headers=auth)
    assert not c.is_model_ready("iris")
    import tritonclient.grpc as g

    x = g.InferInput("input", list(IRIS.shape), "FP32")
    x.set_data_from_numpy(IRIS)
    code, message = _code(lambda: c.infer("iris", [x]))
    assert code in ("UNAVAILABLE", "NOT_FOUND"), (code, message)
    c.load_model("iris", headers=auth)
    assert c.is_model_ready("iris")
    assert c.infer("iris", [x]).as_numpy("label").tolist() == [0, 2, 1]
    code, message = _code(lambda: c.load_model("no_such_model", headers=auth))
    assert code in ("INVALID_ARGUMENT", "NOT_FOUND"), (code, message)


def bad_requests(address: str) -> None:
    """Each bad request gets its code and a message naming the problem; the server still
    answers afterwards."""
    import tritonclient.grpc as g
    from tritonclient.grpc import service_pb2 as pb

    c = _client(address)

    def raw(model: str, name: str, dt: str, shape: list[int], data: bytes) -> tuple[str, str]:
        req = pb.ModelInferRequest(model_name=model)
        req.inputs.add(name=name, datatype=dt, shape=shape)
        req.raw_input_contents.append(data)
        try:
            c._client_stub.ModelInfer(req)
        except Exception as exc:
            return exc.code().name, exc.details()  # type: ignore[attr-defined]
        raise AssertionError("accepted")

    four = IRIS[:1].tobytes()
    cases = [
        (raw("nope", "input", "FP32", [1, 4], four), "NOT_FOUND", "nope"),
        (raw("iris", "input", "FP32", [1, 4], four[:-1]), "INVALID_ARGUMENT", "15 bytes"),
        (raw("iris", "input", "FP32", [1, 5], four + four[:4]), "INVALID_ARGUMENT", "shape"),
        (raw("iris", "input", "FP64", [1, 4], IRIS[:1].astype(np.float64).tobytes()),
         "INVALID_ARGUMENT", "datatype"),
        (raw("iris", "input", "FP99", [1, 4], four), "INVALID_ARGUMENT", "datatype"),
        (raw("iris", "input", "FP32", [1, 1 << 40], four), "INVALID_ARGUMENT", "too large"),
        (raw("iris", "wrong", "FP32", [1, 4], four), "INVALID_ARGUMENT", "wrong"),
        (raw("iris", "input", "FP32", [1, 4], np.full(4, np.nan, np.float32).tobytes()),
         "INVALID_ARGUMENT", "NaN"),
        (raw("alltypes", "x_BYTES", "BYTES", [1, 1], b"\x09\x00\x00\x00ab"),
         "INVALID_ARGUMENT", "past the end"),
        (raw("alltypes", "x_BYTES", "BYTES", [1, 1], b"\x02\x00\x00\x00\xff\xfe"),
         "INVALID_ARGUMENT", "UTF-8"),
        (raw("alltypes", "x_BOOL", "BOOL", [1, 2], b"\x00\x07"), "INVALID_ARGUMENT", "BOOL"),
    ]
    for (code, message), want_code, want_text in cases:
        assert code == want_code and want_text in message, (code, message, want_code, want_text)
    x = g.InferInput("input", list(IRIS.shape), "FP32")
    x.set_data_from_numpy(IRIS)
    assert c.infer("iris", [x]).as_numpy("label").tolist() == [0, 2, 1]


def too_large(address: str, limit: int) -> None:
    """A message above --grpc-max-message-bytes: RESOURCE_EXHAUSTED, and the limit named."""
    import tritonclient.grpc as g

    c = _client(address)
    rows = limit // 16 + 1
    x = g.InferInput("input", [rows, 4], "FP32")
    x.set_data_from_numpy(np.ones((rows, 4), np.float32))
    code, message = _code(lambda: c.infer("iris", [x]))
    assert code == "RESOURCE_EXHAUSTED" and str(limit) in message, (code, message)
    x = g.InferInput("input", [2, 4], "FP32")
    x.set_data_from_numpy(IRIS[:2])
    assert c.infer("iris", [x]).as_numpy("label").tolist() == [0, 2]


def deadline(address: str) -> tuple[list[str], str, float]:
    """Two long requests (64 rows each, no deadline) to the slow model, then, while they run,
    one with a 50 ms gRPC deadline: the codes of the long ones, the code of the short one and
    how long it took."""
    import tritonclient.grpc.aio as ga
    from tritonclient.utils import InferenceServerException

    async def run() -> tuple[list[str], str, float]:
        c = ga.InferenceServerClient(address)
        x = ga.InferInput("input", [64, 4], "FP32")
        x.set_data_from_numpy(np.ones((64, 4), np.float32))

        async def one(timeout: float | None) -> str:
            try:
                await c.infer("slow", [x], client_timeout=timeout)
            except InferenceServerException as exc:
                return str(exc.status()).removeprefix("StatusCode.")
            return "OK"

        try:
            long = [asyncio.create_task(one(None)) for _ in range(2)]
            await asyncio.sleep(0.02)
            t0 = time.monotonic()
            short = await one(0.05)
            took = time.monotonic() - t0
            return list(await asyncio.gather(*long)), short, took
        finally:
            await c.close()

    return asyncio.run(run())


def flood(address: str, model: str, clients: int, rows: int) -> list[str]:
    """`clients` concurrent requests at once (grpc.aio through tritonclient's aio client): the
    status code name of each."""
    import tritonclient.grpc.aio as ga
    from tritonclient.utils import InferenceServerException

    async def run() -> list[str]:
        c = ga.InferenceServerClient(address)
        x = ga.InferInput("input", [rows, 4], "FP32")
        x.set_data_from_numpy(np.ones((rows, 4), np.float32))

        async def one() -> str:
            try:
                await c.infer(model, [x])
            except InferenceServerException as exc:
                return str(exc.status()).removeprefix("StatusCode.") + ":" + (exc.message() or "")
            return "OK"

        try:
            return list(await asyncio.gather(*(one() for _ in range(clients))))
        finally:
            await c.close()

    return asyncio.run(run())


def batch_sizes(address: str, model: str, seconds: float, routing_key: str = "") -> list[int]:
    """One client sending one-row requests for `seconds`: the batch size of each response."""
    import tritonclient.grpc as g

    c = _client(address)
    x = g.InferInput("input", [1, 4], "FP32")
    x.set_data_from_numpy(IRIS[:1])
    sizes = []
    headers = {"x-routing-key": routing_key} if routing_key else None
    deadline_at = time.monotonic() + seconds
    while time.monotonic() < deadline_at:
        r = c.infer(model, [x], headers=headers)
        sizes.append(r.get_response().parameters["batch_size"].int64_param)
    return sizes


def kserve_client(address: str) -> None:
    """KServe's own gRPC client (its SDK's InferenceGRPCClient), raw and typed tensors."""
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    async def run() -> None:
        async with InferenceGRPCClient(address, timeout=30) as c:
            assert await c.is_server_ready()
            assert await c.is_model_ready("iris")
            x = InferInput("input", list(IRIS.shape), "FP32")
            x.set_data_from_numpy(IRIS)
            r = await c.infer(InferRequest("iris", [x], request_id="k1"))
            assert r.id == "k1" and r.model_name == "iris"
            out = {o.name: o.as_numpy() for o in r.outputs}
            assert out["label"].tolist() == [0, 2, 1], out
            typed = InferInput("input", list(IRIS.shape), "FP32", IRIS.ravel().tolist())
            r = await c.infer(InferRequest("iris", [typed]))
            assert {o.name: o.as_numpy() for o in r.outputs}["label"].tolist() == [0, 2, 1]

    asyncio.run(run())


def server_ready(address: str) -> bool:
    return bool(_client(address).is_server_ready())


def versions_by_key(address: str, model: str, keys: list[str], as_id: bool) -> list[str]:
    """The version that answered each routing key, sent as `x-routing-key` metadata or (as_id)
    as the request id."""
    import tritonclient.grpc as g

    c = _client(address)
    x = g.InferInput("input", [1, 4], "FP32")
    x.set_data_from_numpy(IRIS[:1])
    out = []
    for key in keys:
        if as_id:
            r = c.infer(model, [x], request_id=key)
        else:
            r = c.infer(model, [x], headers={"x-routing-key": key})
        out.append(r.get_response().model_version)
    return out


def traced_infer(address: str, traceparent: str) -> None:
    """One iris call through tritonclient.grpc carrying a W3C traceparent in its metadata."""
    import tritonclient.grpc as g

    x = g.InferInput("input", list(IRIS.shape), "FP32")
    x.set_data_from_numpy(IRIS)
    _client(address).infer("iris", [x], headers={"traceparent": traceparent})
