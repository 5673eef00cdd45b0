"""The one-call path for a plain JSON input (`plain_input`) equals the general path or declines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.errors import BadRequest
from serving.protocol import _reference, v2
from serving.protocol.columns import PD_JSON
from serving.types import Tensor
from tests.compiled import compiled as _kernels
from tests.compiled import needs_compiled

pytestmark = needs_compiled


def general(item: object) -> Tensor | str:
    """The general path's Tensor for `item`, or its error message."""
    try:
        return v2._decode_general(item, memoryview(b""), 0, None)[0]
    except BadRequest as exc:
        return str(exc)


def decoded(item: object) -> Tensor | str:
    """What the codec makes of `item` (the plain path first), or its error message."""
    try:
        return v2._decode_input(item, memoryview(b""), 0, None)[0]
    except BadRequest as exc:
        return str(exc)


def same(fast: Tensor | str, slow: Tensor | str) -> bool:
    if isinstance(fast, str) or isinstance(slow, str):
        return fast == slow
    return (
        (fast.name, fast.datatype, fast.shape, fast.parameters, fast.finite)
        == (slow.name, slow.datatype, slow.shape, slow.parameters, slow.finite)
        and fast.data.dtype == slow.data.dtype
        and fast.data.shape == slow.data.shape
        and (fast.data.tolist() == slow.data.tolist() if fast.data.dtype == object
             else fast.data.tobytes() == slow.data.tobytes())
    )


scalars = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-3.5e38, max_value=3.5e38),
    st.integers(-(2**64), 2**64),
    st.integers(-100, 100),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)


@st.composite
def data_lists(draw: st.DrawFn) -> tuple[list[int], str, object]:
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3))
    kind = draw(st.sampled_from(["float", "int", "str", "any"]))
    elem = {
        "float": st.floats(allow_nan=False, allow_infinity=False, width=32),
        "int": st.integers(-(2**63), 2**63 - 1),
        "str": st.text(max_size=4),
        "any": scalars,
    }[kind]

    def build(dims: list[int]) -> object:
        if not dims:
            return draw(elem)
        n = dims[0]
        if draw(st.integers(0, 9)) == 0:  # sometimes ragged
            n = max(0, n + draw(st.sampled_from([-1, 1])))
        return [build(dims[1:]) for _ in range(n)]

    return shape, kind, build(shape)


@st.composite
def items(draw: st.DrawFn) -> object:
    shape, kind, data = draw(data_lists())
    fitting = {"float": ["FP32", "FP64"], "int": ["INT64", "FP32", "FP64"], "str": ["BYTES"],
               "any": ["FP32", "INT64", "BYTES"]}[kind]
    if draw(st.integers(0, 4)) == 0:  # a declared shape that may not match the data
        shape = draw(st.lists(st.one_of(st.integers(-1, 5), st.booleans()), max_size=3))
    item: dict[str, object] = {
        "name": draw(st.sampled_from(["x", "x", "x", "", 3])),
        "datatype": draw(st.sampled_from(fitting) if draw(st.integers(0, 3))
                         else st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "INT32", "BOOL"])),
        "shape": shape,
        "data": data,
    }
    if draw(st.integers(0, 3)) == 0:
        item["parameters"] = draw(st.sampled_from([
            {}, {"content_type": "str"}, {"content_type": PD_JSON}, {"binary_data_size": 4},
            {"content_type": "np"}, [],
        ]))
    if draw(st.integers(0, 5)) == 0:
        item[draw(st.sampled_from(["extra", "data", "name"]))] = None
    if draw(st.integers(0, 5)) == 0:
        del item[draw(st.sampled_from(["name", "datatype", "shape", "data"]))]
    return item


@settings(max_examples=800, deadline=None)
@given(item=items())
def test_plain_input_equals_the_general_path_or_declines(item: object) -> None:
    assert _kernels is not None
    if _kernels.plain_input(item) is None:
        return
    assert same(decoded(item), general(item))


@settings(max_examples=300, deadline=None)
@given(request=st.lists(items(), min_size=1, max_size=4))
def test_plain_inputs_equal_the_per_input_path_or_decline(request: list[object]) -> None:
    """The one-call path for a whole request gives each input's Tensor, or declines."""
    assert _kernels is not None
    fast = _kernels.plain_inputs(request, Tensor, PD_JSON)
    if fast is None:
        return
    assert all(_kernels.plain_input(item) is not None for item in request)
    assert len(fast) == len(request)
    for tensor, item in zip(fast, request, strict=True):
        assert same(tensor, general(item))


def test_plain_inputs_leave_pd_json_columns_to_the_per_input_path() -> None:
    assert _kernels is not None
    column = {"name": "c", "datatype": "BYTES", "shape": [1], "data": ['"rose"']}
    assert _kernels.plain_inputs([column], Tensor, PD_JSON) is not None
    column["parameters"] = {"content_type": PD_JSON}
    assert _kernels.plain_inputs([column], Tensor, PD_JSON) is None
    assert _reference.plain_inputs([column], Tensor, PD_JSON) is None


@pytest.mark.parametrize(
    ("item", "taken"),
    [
        pytest.param({"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [[1, 2.5, 3, 4]]},
                     True, id="fp32-row"),
        pytest.param({"name": "a", "datatype": "INT64", "shape": [2, 1], "data": [[1], [-2]]},
                     True, id="int64-column"),
        pytest.param({"name": "a", "datatype": "BYTES", "shape": [2], "data": ["x", "y"],
                      "parameters": {"content_type": "str"}}, True, id="bytes-with-codec"),
        pytest.param({"name": "a", "datatype": "BYTES", "shape": [2, 1], "data": [["x"], ["y"]]},
                     True, id="bytes-rows"),
        pytest.param({"name": "a", "datatype": "INT64", "shape": [1], "data": [1.0]},
                     False, id="float-for-int64"),
        pytest.param({"name": "a", "datatype": "INT64", "shape": [1], "data": [2**63]},
                     False, id="int64-overflow"),
        pytest.param({"name": "a", "datatype": "INT64", "shape": [1], "data": [True]},
                     False, id="bool-for-int64"),
        pytest.param({"name": "a", "datatype": "FP32", "shape": [2], "data": [1.0]},
                     False, id="count-mismatch"),
        pytest.param({"name": "a", "datatype": "FP32", "shape": [0], "data": []},
                     False, id="empty"),
        pytest.param({"name": "a", "datatype": "FP32", "shape": [1], "data": [1.0],
                      "parameters": {"binary_data_size": 4}}, False, id="binary"),
        pytest.param({"name": "a", "datatype": "BYTES", "shape": [1], "data": [1]},
                     False, id="number-in-bytes"),
        pytest.param({"name": "a", "datatype": "FP16", "shape": [1], "data": [1.0]},
                     False, id="other-datatype"),
        pytest.param({"name": "a", "datatype": "FP32", "shape": [1], "data": [1.0], "x": 1},
                     False, id="extra-key"),
    ],
)
def test_plain_input_cases(item: dict[str, object], taken: bool) -> None:
    assert _kernels is not None
    assert (_kernels.plain_input(item) is not None) == taken
    assert _reference.plain_input(item) is None  # the twin always declines


def test_pd_json_strings_are_unwrapped_on_the_plain_path() -> None:
    item = {"name": "c", "datatype": "BYTES", "shape": [2], "data": ['"rose"', "null"],
            "parameters": {"content_type": PD_JSON}}
    tensor, used = v2._decode_input(item, memoryview(b""), 0, None)
    assert used == 0 and tensor.data.tolist() == ["rose", ""]
