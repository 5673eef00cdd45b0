"""JSON data kernels, compiled == reference on generated inputs (hypothesis)."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from serving.protocol import _reference
from serving.protocol.datatypes import NUMPY_DTYPES
from tests.compiled import compiled as _kernels
from tests.compiled import needs_compiled
from tests.protocol.test_json_kernels import NUMERIC, decode, outcome

# ---- compiled == reference --------------------------------------------------------------------


def _elements(dtype: np.dtype) -> st.SearchStrategy[Any]:
    if dtype.kind == "f":
        return st.floats(
            width=8 * dtype.itemsize, allow_nan=False, allow_infinity=False, allow_subnormal=True
        )
    if dtype.kind == "b":
        return st.booleans()
    info = np.iinfo(dtype)
    return st.integers(int(info.min), int(info.max))


@st.composite
def json_tensors(draw: st.DrawFn) -> tuple[bytes, str]:
    """A tensor's `data` as JSON text (nested or flat, compact or spaced) and a datatype."""
    datatype = draw(st.sampled_from(NUMERIC))
    dtype = NUMPY_DTYPES[datatype]
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5))
    arr = draw(hnp.arrays(dtype, shape, elements=_elements(dtype)))
    data = arr.ravel().tolist() if draw(st.booleans()) else arr.tolist()
    style = draw(st.sampled_from(["orjson", "indent", "spaced", "repr32"]))
    if style == "orjson":
        text = orjson.dumps(data)
    elif style == "indent":
        text = orjson.dumps(data, option=orjson.OPT_INDENT_2)
    elif style == "spaced":
        text = json.dumps(data, separators=(" ,\t", ": ")).replace("[", "[\r\n ").encode()
    else:  # float32 values as their shortest float32 text, as numpy-aware clients send them
        text = orjson.dumps(arr, option=orjson.OPT_SERIALIZE_NUMPY)
    # Decoding as another datatype exercises the kind and range checks.
    if draw(st.integers(0, 3)) == 0:
        datatype = draw(st.sampled_from(NUMERIC))
    return text, datatype


@needs_compiled
@settings(max_examples=150, deadline=None)
@given(tensor=json_tensors())
def test_decode_compiled_matches_reference(tensor: tuple[bytes, str]) -> None:
    text, datatype = tensor
    fast = outcome(decode, _kernels, text, datatype)
    assert fast == outcome(decode, _reference, text, datatype)
    if fast[0] == "ok":  # and the spec is what it says: numpy's own reading of the JSON
        with np.errstate(over="ignore"):
            expected = np.array(json.loads(text)).astype(NUMPY_DTYPES[datatype]).ravel()
        assert fast[3] == expected.tobytes()


NUMBER_BYTES = b"0123456789-+.eE"
JUNK = [*NUMBER_BYTES, *b'[], \t\n"tfnrux{}\\:a\x00\xff']


@st.composite
def mangled(draw: st.DrawFn, text: bytes) -> bytes:
    """`text` with a few random cuts, replacements, insertions and deletions."""
    out = bytearray(text)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["cut", "replace", "insert", "delete"]))
        at = draw(st.integers(0, len(out)))
        if op == "cut":
            del out[at:]
        elif op == "insert":
            out[at:at] = bytes(draw(st.lists(st.sampled_from(JUNK), min_size=1, max_size=3)))
        elif at < len(out):
            if op == "replace":
                out[at] = draw(st.sampled_from(JUNK))
            else:
                del out[at]
    return bytes(out)


@needs_compiled
@settings(max_examples=200, deadline=None)
@given(data=st.data(), tensor=json_tensors())
def test_decode_malformed_compiled_matches_reference(
    data: st.DataObject, tensor: tuple[bytes, str]
) -> None:
    text = data.draw(mangled(tensor[0]))
    # Junk around the slice: reading outside [start, end) would change the answer.
    before = data.draw(st.binary(max_size=4))
    after = data.draw(st.sampled_from([b"", b"1", b"]", b"5]", b"e5", b".5", b"0]]]"]))
    body = before + text + after
    start, end = len(before), len(before) + len(text)
    assert outcome(_kernels.decode_json_numbers, body, start, end, tensor[1]) == outcome(
        _reference.decode_json_numbers, body, start, end, tensor[1]
    )


@needs_compiled
@settings(max_examples=100, deadline=None)
@given(
    start=st.integers(-12, 12),
    end=st.one_of(st.integers(-12, 12), st.just(2**70)),
    body=st.sampled_from([b"[1,2]", bytearray(b"[1,2]"), "[1,2]", b"xx[1,2]yy"]),
    datatype=st.sampled_from(["FP32", "BOOL", "BYTES", "fp32", None]),
)
def test_decode_odd_arguments_compiled_matches_reference(
    start: int, end: int, body: Any, datatype: Any
) -> None:
    assert outcome(_kernels.decode_json_numbers, body, start, end, datatype) == outcome(
        _reference.decode_json_numbers, body, start, end, datatype
    )


def _double(bits: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", bits))[0])


@needs_compiled
@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.integers(0, 2**64 - 1).map(_double).filter(np.isfinite),
        ),
        min_size=1,
        max_size=20,
    ),
    digits=st.integers(1, 25),
)
def test_decode_rounds_like_orjson(values: list[float], digits: int) -> None:
    """Every double's shortest text, and text with too many or too few digits, round alike."""
    tokens = [repr(v) for v in values] + [f"{v:.{digits}e}" for v in values]
    tokens = [t for t in tokens if np.isfinite(float(t))]  # 1.8e308 is not a JSON number
    text = ("[" + ",".join(tokens) + "]").encode()
    arr, _ = decode(_kernels, text, "FP64")
    assert arr.tobytes() == np.array(orjson.loads(text), np.float64).tobytes()


# ---- split_tensor_data: compiled == reference, and the skeleton rebuilds the body ------------

NAMES = st.text(alphabet='ab"\\[]{}:, \u00e9', max_size=4)


@st.composite
def v2_inputs(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["numeric", "flat", "bytes", "empty", "no-data", "odd"]))
    if kind == "odd":
        return draw(st.sampled_from([7, None, "x", [1, 2], {}, {"data": None}, {"data": [{}]}]))
    tensor: dict[str, Any] = {"name": draw(NAMES), "datatype": "FP32", "shape": [2, 2]}
    if kind == "numeric":
        tensor["data"] = draw(st.lists(st.lists(st.floats(-1e6, 1e6), max_size=3), max_size=3))
    elif kind == "flat":
        tensor["data"] = draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5))
    elif kind == "bytes":
        tensor["datatype"] = "BYTES"
        tensor["data"] = draw(st.lists(NAMES, max_size=3))
    elif kind == "empty":
        tensor["data"] = []
    if draw(st.booleans()):
        tensor["parameters"] = {"data": [1, 2], "inputs": [{"data": [3]}]}
    keys = draw(st.permutations(list(tensor)))
    return {k: tensor[k] for k in keys}


@st.composite
def v2_requests(draw: st.DrawFn) -> bytes:
    """A V2 request like clients send: keys in any order, nested look-alikes, any layout."""
    request: dict[str, Any] = {
        "id": draw(NAMES),
        "inputs": draw(st.lists(v2_inputs(), max_size=4)),
        "outputs": [{"name": "y", "data": [1]}],
        "parameters": {"inputs": [{"data": [0]}], "data": [[1]]},
    }
    keys = draw(st.permutations(list(request)))
    request = {k: request[k] for k in keys}
    if draw(st.booleans()):
        return orjson.dumps(request, option=orjson.OPT_INDENT_2)
    return json.dumps(request, separators=(" , ", " : "), ensure_ascii=draw(st.booleans())).encode()


def rebuild(body: bytes, result: tuple[bytes, list[tuple[int, int, int]]]) -> Any:
    """The document the skeleton and its spans describe."""
    skeleton, spans = result
    doc = orjson.loads(skeleton)
    for index, start, end in spans:
        assert doc["inputs"][index]["data"] is None
        doc["inputs"][index]["data"] = orjson.loads(body[start:end])
    return doc


@settings(max_examples=100, deadline=None)
@given(body=v2_requests())
def test_split_skeleton_rebuilds_the_request(body: bytes) -> None:
    result = _reference.split_tensor_data(body)
    assert result is not None
    assert rebuild(body, result) == orjson.loads(body)
    if _kernels is not None:
        assert _kernels.split_tensor_data(body) == result


@settings(max_examples=150, deadline=None)
@given(data=st.data(), body=v2_requests())
def test_split_malformed_never_passes_bad_json(data: st.DataObject, body: bytes) -> None:
    """Cut or mangled requests: compiled == reference, and a skeleton whose pieces all parse
    means the body parses to the same document (a broken body is never made whole)."""
    body = data.draw(mangled(body))
    result = _reference.split_tensor_data(body)
    if _kernels is not None:
        assert _kernels.split_tensor_data(body) == result
    if result is None:
        return
    try:
        rebuilt = rebuild(body, result)
    except (orjson.JSONDecodeError, TypeError, KeyError, IndexError):
        return
    assert rebuilt == orjson.loads(body)
