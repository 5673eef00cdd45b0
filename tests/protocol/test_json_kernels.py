"""JSON data kernels: behaviour on both implementations (generated inputs: *_properties.py)."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np
import orjson
import pytest

from serving.protocol import _reference, kernels
from serving.protocol.datatypes import NUMPY_DTYPES
from tests.compiled import compiled as _kernels
from tests.compiled import impls, needs_compiled

IMPLS = impls(_reference)
NUMERIC = sorted(_reference.NUMERIC_DATATYPES)


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """Behaviour tests take `impl`: each runs on the compiled kernels and on the twin."""
    return request.param


def outcome(fn: Any, *args: Any) -> tuple[Any, ...]:
    """What a call did, comparable with ==: arrays as (dtype, bytes), or the exception raised."""
    try:
        result = fn(*args)
    except Exception as exc:
        return ("error", type(exc), str(exc))
    if isinstance(result, tuple) and result and isinstance(result[0], np.ndarray):
        arr, shape = result
        return ("ok", arr.dtype, arr.ndim, arr.tobytes(), shape)
    return ("ok", result)


def decode(impl: ModuleType, text: bytes, datatype: str) -> tuple[np.ndarray, tuple[int, ...]]:
    return impl.decode_json_numbers(text, 0, len(text), datatype)


def test_kernels_module_picks_the_implementation() -> None:
    expected = _reference if os.environ.get("SERVING_PUREPYTHON") else _kernels
    assert kernels.split_tensor_data is expected.split_tensor_data
    assert kernels.decode_json_numbers is expected.decode_json_numbers


# ---- split_tensor_data ------------------------------------------------------------------------

REQUEST = (
    b'{"id":"7","parameters":{"inputs":[{"data":[9]}]},"inputs":['
    b'{"name":"x","datatype":"FP32","shape":[2,2],"data":[[1,2],[3.5,-4e2]]},'
    b'{"name":"s]","datatype":"BYTES","shape":[2],"data":["a]\\"[","b"]},'
    b"7,"
    b'{"data" : [ ] , "name":"e"}],'
    b'"outputs":[{"name":"y","data":[1]}]}'
)


def test_split_cuts_numeric_data_out(impl: ModuleType) -> None:
    result = impl.split_tensor_data(REQUEST)
    assert result is not None
    skeleton, spans = result
    assert [(i, REQUEST[a:b]) for i, a, b in spans] == [(0, b"[[1,2],[3.5,-4e2]]"), (3, b"[ ]")]
    doc = orjson.loads(skeleton)
    assert [x["data"] if isinstance(x, dict) else x for x in doc["inputs"]] == [
        None,
        ['a]"[', "b"],  # BYTES data stays in the skeleton
        7,
        None,
    ]
    assert doc["parameters"] == {"inputs": [{"data": [9]}]}  # only the top-level "inputs"
    assert doc["outputs"] == [{"name": "y", "data": [1]}]


def test_split_without_numeric_data_returns_the_body(impl: ModuleType) -> None:
    body = b'{"inputs":[{"name":"s","datatype":"BYTES","data":["x"]}]}'
    assert impl.split_tensor_data(body) == (body, [])


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"[1,2]", id="array"),
        pytest.param(b'"inputs"', id="string"),
        pytest.param(b'{"inputs":[{"data":[1,2]}]', id="unclosed"),
        pytest.param(b'{"inputs":[{"data":[1,2}]}', id="mismatched"),
        pytest.param(b'{"inputs":[{"data":[1,2]}]}]', id="extra-close"),
        pytest.param(b'{"inputs":[{"data":[1,2]}]} {}', id="trailing"),
        pytest.param(b'{"inputs":[{"name":"x}', id="open-string"),
        pytest.param(b'{"inputs":[{"data":[1,2]}],"inputs":[]}', id="duplicate-inputs"),
        pytest.param(b'{"inputs":[{"data":[1],"data":[2]}]}', id="duplicate-data"),
        pytest.param(b'{"\\u0069nputs":[{"data":[1]}]}', id="escaped-inputs"),
        pytest.param(b'{"inputs":[{"d\\u0061ta":[1]}]}', id="escaped-data"),
        pytest.param(b'{"inputs":[{"data":[1,2', id="truncated-data"),
        pytest.param(b"{" + b"[" * 1100 + b"]" * 1100 + b"}", id="too-deep"),
    ],
)
def test_split_declines_what_it_cannot_scan_safely(impl: ModuleType, body: bytes) -> None:
    assert impl.split_tensor_data(body) is None


def test_split_keeps_odd_data_values(impl: ModuleType) -> None:
    body = b'{"inputs":[{"data":{"a":[1]}},{"data":[{}]},{"data":null},{"data":[[1],["x"]]}]}'
    assert impl.split_tensor_data(body) == (body, [])


def test_split_requires_bytes(impl: ModuleType) -> None:
    with pytest.raises(TypeError, match=r"^body must be bytes, not str$"):
        impl.split_tensor_data("{}")


# ---- decode_json_numbers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "datatype", "values", "shape"),
    [
        pytest.param(b"[1,2.5,-3e-2]", "FP32", [1, 2.5, -0.03], (3,), id="flat"),
        pytest.param(b" [ [1, 2] ,\n\t[3,4]\r] ", "INT64", [1, 2, 3, 4], (2, 2), id="nested-ws"),
        pytest.param(b"[]", "INT8", [], (0,), id="empty"),
        pytest.param(b"[[],[]]", "BOOL", [], (2, 0), id="empty-nested"),
        pytest.param(b"[[[1]],[[2]]]", "UINT8", [1, 2], (2, 1, 1), id="3-D"),
        pytest.param(b"[true,false]", "BOOL", [True, False], (2,), id="bool"),
        pytest.param(b"[1,2.0]", "FP16", [1, 2], (2,), id="fp16"),
        pytest.param(b"[-128,127]", "INT8", [-128, 127], (2,), id="int8-range"),
        pytest.param(b"[18446744073709551615]", "UINT64", [2**64 - 1], (1,), id="uint64-max"),
        pytest.param(b"[-0,-0.0]", "FP64", [0.0, -0.0], (2,), id="zeros"),
        pytest.param(b"[1e-400,5e-324]", "FP64", [0.0, 5e-324], (2,), id="tiny"),
        pytest.param(b"[9007199254740993]", "FP64", [9007199254740992.0], (1,), id="int-to-fp"),
        pytest.param(b"[true,2]", "INT32", [1, 2], (2,), id="bool-with-ints"),
    ],
)
def test_decode_parses_numbers(
    impl: ModuleType, text: bytes, datatype: str, values: list[Any], shape: tuple[int, ...]
) -> None:
    arr, got_shape = decode(impl, text, datatype)
    assert arr.dtype == NUMPY_DTYPES[datatype]
    assert arr.ndim == 1
    assert got_shape == shape
    assert arr.tobytes() == np.array(values, arr.dtype).tobytes()  # -0.0 included


@pytest.mark.parametrize(
    ("text", "datatype", "message"),
    [
        pytest.param(b"[1,2.5]", "INT32", "data must hold integers for INT32, got float", id="f"),
        pytest.param(b'[1,"a"]', "FP32", "data must hold numbers for FP32, got str", id="str"),
        pytest.param(b"[1,null]", "FP32", "data must hold numbers for FP32, got null or object"),
        pytest.param(b"[1,0]", "BOOL", "data must hold true/false for BOOL, got int", id="bool"),
        pytest.param(b"[true]", "FP32", "data must hold numbers for FP32, got bool", id="b-fp"),
        pytest.param(b"[128]", "INT8", "data has out-of-range values for INT8", id="int8"),
        pytest.param(b"[-1]", "UINT64", "data has out-of-range values for UINT64", id="neg-u"),
        pytest.param(b"[70000]", "FP16", "data has out-of-range values for FP16", id="fp16"),
        pytest.param(b"[1e39]", "FP32", "data has out-of-range values for FP32", id="fp32"),
        pytest.param(b"[[1,2],[3]]", "FP32", _reference.RAGGED, id="ragged"),
        pytest.param(b"[1,[2]]", "FP32", _reference.RAGGED, id="mixed-depth"),
        pytest.param(b"5", "FP32", "data must be a JSON array, got int", id="scalar"),
        pytest.param(b"[1]", "BYTES", "datatype 'BYTES' has no numeric JSON form", id="bytes"),
        pytest.param(b"[1,]", "FP32", "data is not valid JSON: ", id="trailing-comma"),
        pytest.param(b"[1e400]", "FP64", "data is not valid JSON: ", id="infinity"),
        pytest.param(b"[NaN]", "FP64", "data is not valid JSON: ", id="nan"),
    ],
)
def test_decode_rejects(impl: ModuleType, text: bytes, datatype: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        decode(impl, text, datatype)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    "token", [b"1.", b".5", b"01", b"-", b"+1", b"1e", b"1e+", b"-.5", b"0x10", b"Infinity", b"1_0"]
)
def test_decode_is_as_strict_as_orjson(impl: ModuleType, token: bytes) -> None:
    with pytest.raises(ValueError, match=r"^data is not valid JSON: "):
        decode(impl, b"[0," + token + b"]", "FP64")


def test_decode_reads_only_its_slice(impl: ModuleType) -> None:
    body = b'{"data":[1,2,3]5e7, "more":[[4]]}'
    start = body.index(b"[")
    assert decode(impl, body[start : start + 7], "FP64")[0].tolist() == [1, 2, 3]
    arr, shape = impl.decode_json_numbers(body, start, start + 7, "FP64")
    assert (arr.tolist(), shape) == ([1, 2, 3], (3,))
    with pytest.raises(ValueError, match=r"^data is not valid JSON: "):
        impl.decode_json_numbers(body, start, start + 6, "FP64")  # "[1,2,3" cut before `]`


@needs_compiled
def test_compiled_parses_plain_numeric_data_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """The twin is only a fallback: well-formed numeric data never reaches it."""

    def fail(*args: Any) -> None:
        raise AssertionError("delegated to the reference")

    monkeypatch.setattr(_reference, "decode_json_numbers", fail)
    rng = np.random.default_rng(0)
    floats = rng.standard_normal((8, 8)).astype(np.float32)
    for data, datatype in [
        (floats.tolist(), "FP32"),
        (floats.astype(np.float64).ravel().tolist(), "FP64"),
        ([float(x) for x in floats.ravel() * 1e3], "FP16"),
        (rng.integers(-(2**63), 2**63 - 1, 50).tolist(), "INT64"),
        ([[True, False], [False, True]], "BOOL"),
        ([1, 2.5, -0.0, 1e300, 2.2250738585072014e-308], "FP64"),
    ]:
        text = orjson.dumps(data)
        decode(_kernels, text, datatype)
