"""Client-side checks that tests/e2e/test_grpc_h2.py runs in a spawned child (as grpc_checks.py
does, so no grpcio channel lives in the test process): grpcio's own client channel (grpc-core's
HTTP/2: BDP pings, its flow-control windows, RST_STREAM on cancel, GOAWAY handling) against our
server, with the server's generated messages (their package is renamed, so they never clash)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

INFER = "/inference.GRPCInferenceService/ModelInfer"
IRIS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], np.float32)
UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def _infer(channel: Any) -> Any:
    from serving.grpc_api.proto import grpc_service_pb2 as pb

    return channel.unary_unary(INFER, request_serializer=pb.ModelInferRequest.SerializeToString,
                               response_deserializer=pb.ModelInferResponse.FromString)


def _request(model: str, name: str, x: np.ndarray, rid: str = "") -> Any:
    from serving.grpc_api.proto import grpc_service_pb2 as pb

    req = pb.ModelInferRequest(model_name=model, id=rid)
    req.inputs.add(name=name, datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    return req


def _iris_ok(call: Any, rid: str = "") -> bool:
    out = call(_request("iris", "input", IRIS, rid), timeout=30)
    return bool(out.id == rid and np.frombuffer(out.raw_output_contents[0], np.int64).tolist()
                == [0, 2])


def large_round_trips(address: str, model: str, rows: int, width: int, calls: int) -> list[int]:
    """`calls` identity calls of rows x width FP32 (megabytes each way) on one channel: the
    bytes of each answer's output, checked equal to the input."""
    import grpc

    x = np.arange(rows * width, dtype=np.float32).reshape(rows, width)
    sizes = []
    with grpc.insecure_channel(address, options=UNLIMITED) as ch:
        call = _infer(ch)
        for i in range(calls):
            out = call(_request(model, "x_FP32", x + i, str(i)), timeout=120)
            got = np.frombuffer(out.raw_output_contents[0], np.float32).reshape(rows, width)
            np.testing.assert_array_equal(got, x + i)
            assert out.id == str(i)
            sizes.append(len(out.raw_output_contents[0]))
    return sizes


def over_the_limit(address: str, model: str, rows: int, width: int) -> tuple[str, str, bool]:
    """A message over the server's limit, then a small call on the same channel: (code, details
    of the first, whether the second succeeded)."""
    import grpc

    x = np.zeros((rows, width), np.float32)
    with grpc.insecure_channel(address, options=UNLIMITED) as ch:
        try:
            _infer(ch)(_request(model, "x_FP32", x), timeout=60)
        except grpc.RpcError as exc:
            code, details = exc.code().name, exc.details()
        else:
            raise AssertionError("accepted")
        return code, details, _iris_ok(_infer(ch), "after")


def cancel_while_others_run(address: str, slow: str) -> tuple[list[str], int]:
    """On one channel: a long call to `slow`, cancelled by the client while it runs, and 50
    iris calls meanwhile: (the cancelled call's outcome, how many iris calls succeeded)."""
    import grpc

    with grpc.insecure_channel(address) as ch:
        call = _infer(ch)
        long = call.future(_request(slow, "input", np.ones((64, 4), np.float32)), timeout=60)
        ok = sum(_iris_ok(call, str(i)) for i in range(50))
        long.cancel()
        outcome = ["cancelled" if long.cancelled() else "ran"]
        ok += sum(_iris_ok(call, str(i)) for i in range(50))
        return outcome, ok


def many_calls_one_connection(address: str, n: int) -> int:
    """`n` calls in flight at once on one channel (one HTTP/2 connection): how many answered
    with their own id and labels."""
    import grpc

    with grpc.insecure_channel(address) as ch:
        call = _infer(ch)
        futures = [call.future(_request("iris", "input", IRIS, str(i)), timeout=60)
                   for i in range(n)]
        return sum(f.result().id == str(i) and
                   np.frombuffer(f.result().raw_output_contents[0], np.int64).tolist() == [0, 2]
                   for i, f in enumerate(futures))


def many_connections(address: str, connections: int, calls: int) -> int:
    """`connections` channels, each its own connection (a local subchannel pool), `calls`
    calls on each from its own thread: how many succeeded."""
    import grpc

    def one(i: int) -> int:
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            call = _infer(ch)
            return sum(_iris_ok(call, f"{i}-{j}") for j in range(calls))

    with ThreadPoolExecutor(connections) as pool:
        return sum(pool.map(one, range(connections)))


def calls_for(address: str, seconds: float) -> list[str]:
    """iris calls on one channel for `seconds`: each call's outcome ("OK" or the code)."""
    import grpc

    out = []
    with grpc.insecure_channel(address) as ch:
        call = _infer(ch)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                out.append("OK" if _iris_ok(call) else "WRONG")
            except grpc.RpcError as exc:
                out.append(exc.code().name)
    return out


def drained(address: str, slow: str, n: int) -> tuple[list[str], str]:
    """`n` long calls to `slow` on one channel (the test stops the server meanwhile): their
    outcomes, then the outcome of a call made after they are answered."""
    import grpc

    with grpc.insecure_channel(address) as ch:
        call = _infer(ch)
        long = [call.future(_request(slow, "input", np.ones((64, 4), np.float32)), timeout=120)
                for _ in range(n)]
        codes = []
        for f in long:
            try:
                f.result()
                codes.append("OK")
            except grpc.RpcError as exc:
                codes.append(exc.code().name)
        try:
            _iris_ok(call)
            after = "OK"
        except grpc.RpcError as exc:
            after = exc.code().name
        return codes, after


def unknown_method(address: str) -> tuple[str, str]:
    """A call to a method the service lacks: (code, details)."""
    import grpc

    with grpc.insecure_channel(address) as ch:
        try:
            ch.unary_unary("/inference.GRPCInferenceService/Nope")(b"", timeout=10)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details()
    raise AssertionError("answered")
