"""The per-request input checks: the in-order pass agrees with the general one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving import signature
from serving.errors import BadRequest
from serving.signature import Signature
from serving.types import Tensor, TensorSpec
from tests.compiled import compiled as _kernels
from tests.compiled import impls

SPECS = (
    TensorSpec("age", "INT64", (-1, 1)),
    TensorSpec("income", "FP32", (-1, 1)),
    TensorSpec("colour", "BYTES", (-1, 1)),
)
SIG = Signature(SPECS, (TensorSpec("label", "INT64", (-1,)),))


def _tensor(spec: TensorSpec, rows: int, finite: bool = True) -> Tensor:
    data = np.array(["x"] * rows, dtype=object) if spec.datatype == "BYTES" else np.zeros(
        rows, np.int64 if spec.datatype == "INT64" else np.float32)
    return Tensor(spec.name, spec.datatype, (rows, 1), data, {}, finite)


def _outcome(sig: Signature, tensors: list[Tensor], nan_ok: bool) -> object:
    try:
        feeds, rows = sig.check_inputs(tensors, nan_ok)
    except BadRequest as exc:
        return str(exc)
    return rows, {k: (v.shape, v.dtype.str) for k, v in feeds.items()}


def _general(sig: Signature, tensors: list[Tensor], nan_ok: bool) -> object:
    try:
        feeds, rows = sig._check_each(tensors, nan_ok)
    except BadRequest as exc:
        return str(exc)
    return rows, {k: (v.shape, v.dtype.str) for k, v in feeds.items()}


@settings(max_examples=300, deadline=None)
@given(
    order=st.permutations(range(3)), drop=st.integers(-1, 2), rows=st.lists(
        st.integers(0, 3), min_size=3, max_size=3),
    rename=st.integers(-1, 2), retype=st.integers(-1, 2), flat=st.integers(-1, 2),
    finite=st.booleans(), nan_ok=st.booleans(),
)
def test_in_order_pass_agrees_with_the_general_pass(
    order: list[int], drop: int, rows: list[int], rename: int, retype: int, flat: int,
    finite: bool, nan_ok: bool,
) -> None:
    tensors = [_tensor(SPECS[i], rows[i], finite) for i in order]
    if rename >= 0:
        tensors[rename].name = "other"
    if retype >= 0:
        tensors[retype].datatype = "FP64"
    if flat >= 0:
        tensors[flat].shape = tensors[flat].shape[:1]
    if drop >= 0:
        del tensors[drop]
    assert _outcome(SIG, tensors, nan_ok) == _general(SIG, tensors, nan_ok)
    if _kernels is not None:  # the compiled pass and its twin, on the same request
        assert _ordered(_kernels, tensors, nan_ok) == _ordered(signature, tensors, nan_ok)


def _ordered(impl: object, tensors: list[Tensor], nan_ok: bool) -> object:
    assert SIG._order is not None
    out = impl.ordered_feeds(tensors, SIG._order, nan_ok)  # type: ignore[attr-defined]
    if out is None:
        return None
    feeds, rows = out
    return rows, [(k, v.shape, v.dtype.str, v.base is not None) for k, v in feeds.items()]


@pytest.mark.parametrize("impl", impls(signature))
@pytest.mark.parametrize("shape", [[2, 1], (2,), (2, 1, 1), (2, 2)],
                         ids=["list", "rank1", "rank3", "wide"])
def test_the_in_order_pass_declines_other_shapes(impl: object, shape: object) -> None:
    tensors = [_tensor(s, 2) for s in SPECS]
    tensors[1].shape = shape  # type: ignore[assignment]
    assert _ordered(impl, tensors, False) is None


@pytest.mark.parametrize("impl", impls(signature))
def test_the_usual_request_takes_the_in_order_pass(impl: object) -> None:
    tensors = [_tensor(s, 2) for s in SPECS]
    assert _ordered(impl, tensors, False) == (
        2, [("age", (2, 1), "<i8", True), ("income", (2, 1), "<f4", True),
            ("colour", (2, 1), "|O", True)])
    feeds, rows = SIG.check_inputs(tensors)
    assert rows == 2 and [f.shape for f in feeds.values()] == [(2, 1)] * 3


@pytest.mark.parametrize("shape", [(-1, 4), (3,), (-1, -1)], ids=["batched", "fixed", "ragged"])
def test_models_without_a_fixed_tail_have_no_in_order_pass(shape: tuple[int, ...]) -> None:
    sig = Signature((TensorSpec("x", "FP32", shape),), (TensorSpec("y", "FP32", (-1,)),))
    assert (sig._order is not None) == (shape == (-1, 4))


@pytest.mark.parametrize("impl", impls(signature))
def test_binary_tensors_take_the_in_order_pass_unless_they_hold_nan(impl: object) -> None:
    # binary (and gRPC) tensors come unscanned (finite=False): the pass scans them itself
    tensors = [_tensor(s, 2, finite=False) for s in SPECS]
    assert _ordered(impl, tensors, False) is not None
    tensors[1].data = np.array([0.0, np.nan], np.float32)
    assert _ordered(impl, tensors, False) is None
    assert _ordered(impl, tensors, True) is not None
    with pytest.raises(BadRequest, match="'income' contains NaN or Infinity"):
        SIG.check_inputs(tensors)
