"""The small-tensor fast path (`numbers_from_list`) equals the general path or declines."""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.errors import BadRequest
from serving.protocol import _reference
from serving.protocol._reference import RAGGED, finish_numbers
from tests.compiled import compiled as _kernels
from tests.compiled import impls, needs_compiled

pytestmark = needs_compiled


def general(data: object, datatype: str) -> tuple[str, object]:
    """The general path: numpy's type discovery, then the checks both decoders share."""
    try:
        arr = np.array(data)
    except ValueError:
        return ("error", RAGGED)
    try:
        out, _shape = finish_numbers(arr, datatype)
    except (ValueError, OverflowError) as exc:
        return ("error", str(exc))
    return ("ok", (out.dtype.str, out.tobytes()))


scalars = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-3.5e38, max_value=3.5e38),
    st.integers(-(2**60), 2**60),
    st.integers(-100, 100),
    st.booleans(),
    st.none(),
    st.text(max_size=2),
)


@st.composite
def nested(draw: st.DrawFn) -> object:
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3))
    homogeneous = draw(st.booleans())
    elem = st.floats(allow_nan=False, allow_infinity=False, width=64) if homogeneous else scalars

    def build(dims: list[int]) -> object:
        if not dims:
            return draw(elem)
        n = dims[0]
        if draw(st.integers(0, 9)) == 0:  # sometimes ragged
            n = max(0, n + draw(st.sampled_from([-1, 1])))
        return [build(dims[1:]) for _ in range(n)]

    return build(shape)


@settings(max_examples=400, deadline=None)
@given(data=nested(), datatype=st.sampled_from(["FP32", "FP64", "INT64", "BOOL"]))
def test_fast_path_equals_general_path_or_declines(data: object, datatype: str) -> None:
    fast = _kernels.numbers_from_list(data, datatype)
    if fast is None:
        return
    kind, value = general(data, datatype)
    assert kind == "ok", value
    assert (fast.dtype.str, fast.tobytes()) == value


@pytest.mark.parametrize(
    ("data", "datatype", "taken"),
    [
        pytest.param([[5.1, 3.5, 1.4, 0.2]], "FP32", True, id="one-row"),
        pytest.param([1, 2.5, -3], "FP64", True, id="ints-and-floats"),
        pytest.param([3.4028235e38], "FP32", True, id="fp32-max"),
        pytest.param([3.5e38], "FP32", False, id="fp32-overflow"),
        pytest.param([True, 1.0], "FP32", False, id="bool"),
        pytest.param([2**60], "FP32", False, id="big-int"),
        pytest.param([[1.0], [2.0, 3.0]], "FP32", False, id="ragged"),
        pytest.param([[1.0], 2.0], "FP32", False, id="mixed-depth"),
        pytest.param([], "FP32", False, id="empty"),
        pytest.param([1.0], "INT32", False, id="other-datatype"),
    ],
)
def test_fast_path_cases(data: object, datatype: str, taken: bool) -> None:
    assert (_kernels.numbers_from_list(data, datatype) is not None) == taken


def test_array_from_json_reports_the_same_errors_either_way() -> None:
    from serving.protocol.jsondata import array_from_json

    with pytest.raises(BadRequest, match="out-of-range values for FP32"):
        array_from_json([3.5e38, 1.0], "FP32", "x")
    got = array_from_json([[1.5, 2], [3, 4.25]], "FP32", "x")
    assert got.dtype == np.float32 and got.tolist() == [1.5, 2.0, 3.0, 4.25]
    assert math.isclose(array_from_json([0.1], "FP64", "x")[0], 0.1)


def _deep(dims: list[int]) -> list[object]:
    """A nested list whose first elements have these lengths; the rest are zeros (cheap: the
    shape the kernel reads can multiply past 2**63 while the document stays small)."""
    out: list[object] = [1.0] * dims[-1]
    for n in reversed(dims[:-1]):
        out = [out, *([0] * (n - 1))]
    return out


@pytest.mark.parametrize(
    "dims",
    [
        pytest.param([100_000] * 5, id="1e25-elements"),
        pytest.param([1 << 16] * 4, id="2**64-wraps-to-0"),
        pytest.param([1 << 16] * 3 + [(1 << 16) + 1], id="2**64+2**48"),
        pytest.param([2, (1 << 20)], id="just-past-the-cap"),
        pytest.param([1 << 10, (1 << 10) + 1], id="product-past-the-cap"),
    ],
)
@pytest.mark.parametrize("impl", impls(_reference))
def test_element_count_past_the_cap_declines_without_overflow(impl: ModuleType,
                                                               dims: list[int]) -> None:
    """The element count is checked before each multiply (no signed overflow: the sanitizer
    lane fails on one); the general path then answers with a 400."""
    from serving.protocol.jsondata import array_from_json

    data = _deep(dims)
    assert impl.numbers_from_list(data, "FP32") is None
    with pytest.raises(BadRequest, match="ragged"):
        array_from_json(data, "FP32", "x")


@settings(max_examples=60, deadline=None)
@given(dims=st.lists(st.integers(1, 1 << 21), min_size=1, max_size=6))
def test_any_shape_is_taken_only_within_the_cap(dims: list[int]) -> None:
    assert _kernels is not None
    data = _deep(dims)
    fast = _kernels.numbers_from_list(data, "FP64")
    within = math.prod(dims) <= 1 << 20
    rectangular = all(n == 1 for n in dims[:-1])  # the zeros make anything else ragged
    assert (fast is not None) == (within and rectangular)
