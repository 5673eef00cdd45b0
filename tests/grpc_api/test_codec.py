"""ModelInferRequest/ModelInferResponse <-> the server's request types, and the status codes."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from serving.errors import (
    BadRequest,
    Cancelled,
    Conflict,
    DeadlineExceeded,
    Forbidden,
    ModelError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
)
from serving.grpc_api import codec
from serving.grpc_api.proto import grpc_service_pb2 as pb
from serving.grpc_api.service import status_code
from serving.grpc_api.status import StatusCode
from serving.signature import Signature
from serving.types import InferResponse, Tensor, TensorSpec

SIG = Signature([TensorSpec("input", "FP32", (-1, 4))], [TensorSpec("label", "INT64", (-1,))])


def request(shape: list[int], raw: bytes | None = None, fp32: list[float] | None = None,
            datatype: str = "FP32") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="iris", model_version="1", id="r")
    t = req.inputs.add(name="input", datatype=datatype, shape=shape)
    if raw is not None:
        req.raw_input_contents.append(raw)
    if fp32 is not None:
        t.contents.fp32_contents.extend(fp32)
    return req


def test_raw_contents_decode_to_the_declared_shape() -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    model, version, req = codec.decode_request(request([2, 4], raw=x.tobytes()), SIG)
    assert (model, version, req.id) == ("iris", "1", "r")
    [t] = req.inputs
    assert t.shape == (2, 4) and t.finite is False  # raw floats are scanned for NaN later
    np.testing.assert_array_equal(t.data.reshape(t.shape), x)


def test_typed_contents_decode_like_raw() -> None:
    x = np.arange(8, dtype=np.float32)
    _, _, req = codec.decode_request(request([2, 4], fp32=x.tolist()), SIG)
    np.testing.assert_array_equal(req.inputs[0].data, x)
    assert req.inputs[0].data.dtype == np.float32


@pytest.mark.parametrize(("msg", "text"), [
    (request([2, 4], raw=b"\0" * 31), "31 bytes"),
    (request([2, 4], fp32=[1.0] * 7), "7 elements"),
    (request([2, -1], raw=b""), "shape"),
    (request([1 << 20, 1 << 20], raw=b""), "too large"),
    (request([2, 4], raw=b"\0" * 16, datatype="FP8"), "unknown datatype"),
    (request([1, 2], datatype="FP16"), "raw_input_contents only"),
])
def test_bad_tensors_are_bad_requests(msg: pb.ModelInferRequest, text: str) -> None:
    with pytest.raises(BadRequest, match=text):
        codec.decode_request(msg, SIG)


def test_narrow_integers_are_range_checked() -> None:
    req = pb.ModelInferRequest(model_name="m")
    req.inputs.add(name="x", datatype="UINT8", shape=[2]).contents.uint_contents.extend([1, 256])
    with pytest.raises(BadRequest, match="out of range for UINT8"):
        codec.decode_request(req, SIG)


def test_outputs_and_classification_parameter() -> None:
    msg = request([1, 4], raw=b"\0" * 16)
    out = msg.outputs.add(name="label")
    out.parameters["classification"].int64_param = 2
    msg.parameters["timeout"].int64_param = 500
    _, _, req = codec.decode_request(msg, SIG)
    assert req.outputs is not None and req.outputs[0].classification == 2
    assert req.parameters == {"timeout": 500}


def test_responses_carry_raw_output_contents() -> None:
    labels = np.array([0, 2], np.int64)
    words = np.array(["a", "bé"], dtype=object)
    msg, _ = codec.encode_response(InferResponse(
        "iris", "1", [Tensor("label", "INT64", (2,), labels), Tensor("w", "BYTES", (2,), words)],
        "r", {"batch_size": 3}))
    assert [o.name for o in msg.outputs] == ["label", "w"]
    assert list(msg.outputs[0].shape) == [2]
    np.testing.assert_array_equal(np.frombuffer(msg.raw_output_contents[0], np.int64), labels)
    assert msg.raw_output_contents[1] == b"\x01\x00\x00\x00a\x03\x00\x00\x00b\xc3\xa9"
    assert msg.parameters["batch_size"].int64_param == 3 and msg.id == "r"


@pytest.mark.parametrize(("error", "code"), [
    (BadRequest("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthorized("x"), grpc.StatusCode.UNAUTHENTICATED),
    (Forbidden("x"), grpc.StatusCode.PERMISSION_DENIED),
    (NotFound("x"), grpc.StatusCode.NOT_FOUND),
    (Conflict("x"), grpc.StatusCode.ALREADY_EXISTS),
    (PayloadTooLarge("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
    (Overloaded("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
    (Cancelled("x"), grpc.StatusCode.CANCELLED),
    (ModelError("x"), grpc.StatusCode.INTERNAL),
    (RuntimeError("x"), grpc.StatusCode.INTERNAL),
])
def test_status_codes_map_the_http_statuses(error: Exception, code: grpc.StatusCode) -> None:
    """grpcio's codes are the reference: ours carry the same name and number."""
    got = status_code(error)
    assert (got.name, int(got)) == (code.name, code.value[0])


def test_our_status_codes_are_grpcs() -> None:
    for code in StatusCode:
        assert grpc.StatusCode[code.name].value[0] == code
