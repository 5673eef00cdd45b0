"""Row kernels: behaviour on both implementations, and compiled == reference (hypothesis)."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.batching import _reference, kernels
from tests.compiled import compiled as _kernels
from tests.compiled import impls, needs_compiled

IMPLS = impls(_reference)


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """Behaviour tests take `impl`: each runs on the compiled kernels and on the twin."""
    return request.param


def rows(arr: np.ndarray) -> np.ndarray:
    """The caller's layout: each row as raw bytes."""
    return arr.reshape(len(arr), -1).view(np.uint8)


def outcome(fn: Any, *args: Any) -> tuple[Any, ...]:
    """What a call did: its result, or its exception's type and message."""
    try:
        return ("ok", fn(*args))
    except Exception as exc:
        return ("error", type(exc), str(exc))


def test_kernels_module_picks_the_implementation() -> None:
    expected = _reference if os.environ.get("SERVING_PUREPYTHON") else _kernels
    assert kernels.gather_rows is expected.gather_rows
    assert kernels.scatter_rows is expected.scatter_rows


# ---- gather_rows ------------------------------------------------------------------------------


def test_gather_copies_parts_back_to_back(impl: ModuleType) -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.arange(6, 9, dtype=np.float32).reshape(1, 3)
    out = np.zeros((4, 3), np.float32)  # a batch buffer with a spare row
    assert impl.gather_rows([rows(a), rows(b)], rows(out)) == 3
    assert np.array_equal(out[:3], np.arange(9, dtype=np.float32).reshape(3, 3))
    assert not out[3].any()


def test_gather_accepts_read_only_and_empty_parts(impl: ModuleType) -> None:
    part = rows(np.arange(4, dtype=np.int64).reshape(2, 2))
    part.flags.writeable = False  # request bodies decoded from bytes are read-only
    empty = np.zeros((0, 16), np.uint8)  # rows() cannot say (0, -1): numpy can't infer the -1
    out = np.zeros((2, 16), np.uint8)
    assert impl.gather_rows([empty, part, empty], out) == 2
    assert np.array_equal(out.view(np.int64), [[0, 1], [2, 3]])
    assert impl.gather_rows([], out) == 0


def test_gather_handles_a_part_that_is_a_view_of_out(impl: ModuleType) -> None:
    out = np.arange(12, dtype=np.uint8).reshape(4, 3)
    assert impl.gather_rows([out[1:3].copy(), out[0:2]], out) == 4
    assert np.array_equal(out, [[3, 4, 5], [6, 7, 8], [3, 4, 5], [6, 7, 8]])


@pytest.mark.parametrize(
    ("part_shape", "message"),
    [
        pytest.param((1, 4), "part 1x4 does not fit at row 2", id="width"),
        pytest.param((3, 3), "part 3x3 does not fit at row 2", id="overflow"),
    ],
)
def test_gather_rejects_a_part_that_does_not_fit(
    impl: ModuleType, part_shape: tuple[int, int], message: str
) -> None:
    out = np.zeros((4, 3), np.uint8)
    with pytest.raises(ValueError, match=f"^{message}$"):
        impl.gather_rows([np.ones((2, 3), np.uint8), np.ones(part_shape, np.uint8)], out)


@pytest.mark.parametrize(
    "part",
    [
        pytest.param(np.zeros((2, 3), np.int8), id="int8"),
        pytest.param(np.zeros(3, np.uint8), id="1-D"),
        pytest.param(np.zeros((3, 4), np.uint8)[:, ::2], id="non-contiguous"),
        pytest.param(b"abc", id="bytes"),
    ],
)
def test_gather_rejects_parts_that_are_not_raw_rows(impl: ModuleType, part: Any) -> None:
    out = np.zeros((4, 3), np.uint8)
    with pytest.raises(ValueError, match=r"^part 1 is not a 2-D C-contiguous uint8 array$"):
        impl.gather_rows([np.zeros((1, 3), np.uint8), part], out)


def test_gather_rejects_a_read_only_out(impl: ModuleType) -> None:
    out = np.zeros((2, 3), np.uint8)
    out.flags.writeable = False
    with pytest.raises(ValueError, match=r"^out is not a writable 2-D C-contiguous uint8 array$"):
        impl.gather_rows([np.zeros((1, 3), np.uint8)], out)


# ---- scatter_rows -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "counts",
    [
        pytest.param([1] * 6, id="one-row-each"),
        pytest.param([2, 2, 2], id="equal"),
        pytest.param([1, 3, 0, 2], id="mixed"),
        pytest.param([0, 0, 4, 1, 1], id="zeros"),
        pytest.param([2, 2], id="fewer-rows-than-src"),
        pytest.param([], id="none"),
    ],
)
def test_scatter_returns_consecutive_views(impl: ModuleType, counts: list[int]) -> None:
    src = np.arange(24, dtype=np.float32).reshape(6, 2, 2)
    pieces = impl.scatter_rows(src, counts)
    assert len(pieces) == len(counts)
    row = 0
    for piece, n in zip(pieces, counts, strict=True):
        assert isinstance(piece, np.ndarray)
        assert piece.shape == (n, 2, 2)
        assert np.array_equal(piece, src[row : row + n])
        if n:
            piece[...] = -1  # a view: the write lands in src
            assert (src[row : row + n] == -1).all()
        row += n


@pytest.mark.parametrize(
    "src",
    [
        pytest.param(np.arange(8.0), id="1-D"),
        pytest.param(np.arange(32.0).reshape(16, 2)[::2], id="strided"),
        pytest.param(np.asfortranarray(np.arange(16.0).reshape(8, 2)), id="fortran"),
    ],
)
def test_scatter_views_any_layout(impl: ModuleType, src: np.ndarray) -> None:
    for counts in ([1] * 8, [2] * 4, [4, 4], [3, 1, 2, 2]):
        pieces = impl.scatter_rows(src, counts)
        assert [len(p) for p in pieces] == counts
        assert all(np.shares_memory(p, src) for p in pieces)
        assert np.array_equal(np.concatenate(pieces), src)


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        pytest.param([2, -1], "count -1 at index 1 is negative", id="negative"),
        pytest.param([3, 4], "counts sum to 7 but src has 6 rows", id="too-many"),
        pytest.param([7, -1], "count -1 at index 1 is negative", id="negative-first"),
        pytest.param([2**70], f"counts sum to {2**70} but src has 6 rows", id="huge"),
    ],
)
def test_scatter_rejects_bad_counts(impl: ModuleType, counts: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        impl.scatter_rows(np.zeros((6, 2)), counts)


def test_scatter_rejects_non_integer_counts(impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        impl.scatter_rows(np.zeros((6, 2)), [1.0])


# ---- compiled == reference --------------------------------------------------------------------


@needs_compiled
@settings(max_examples=150, deadline=None)
@given(
    counts=st.lists(st.integers(0, 9), max_size=8),
    width=st.integers(0, 40),
    spare=st.integers(-3, 3),
    bad_width=st.booleans(),
)
def test_gather_compiled_matches_reference(
    counts: list[int], width: int, spare: int, bad_width: bool
) -> None:
    parts = [np.full((n, width), i, np.uint8) for i, n in enumerate(counts)]
    if bad_width and parts:
        parts[-1] = np.zeros((counts[-1], width + 1), np.uint8)
    size = max(sum(counts) + spare, 0)
    fast, slow = np.zeros((size, width), np.uint8), np.zeros((size, width), np.uint8)
    assert outcome(_kernels.gather_rows, parts, fast) == outcome(
        _reference.gather_rows, parts, slow
    )
    assert np.array_equal(fast, slow)  # the same rows copied, even when it stopped at a misfit


def _pieces(result: tuple[Any, ...]) -> tuple[Any, ...]:
    if result[0] != "ok":
        return result
    return ("ok", [(p.shape, p.dtype, p.tobytes()) for p in result[1]])


counts_items = st.one_of(
    st.integers(0, 5),
    st.integers(-2, 20),
    st.sampled_from([True, 2**63, 2**64]),
    st.floats(0, 3),
)


@needs_compiled
@settings(max_examples=200, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=3),
    counts=st.one_of(
        st.lists(st.integers(0, 3), max_size=10),
        st.integers(0, 4).flatmap(lambda n: st.lists(st.just(n), max_size=6)),
        st.lists(counts_items, max_size=6),
    ),
    step=st.sampled_from([1, 2]),
)
def test_scatter_compiled_matches_reference(shape: list[int], counts: list[Any], step: int) -> None:
    src = np.arange(int(np.prod(shape)) * step, dtype=np.int32)
    src = src.reshape(shape[0] * step, *shape[1:])[::step]
    fast = outcome(_kernels.scatter_rows, src, counts)
    assert _pieces(fast) == _pieces(outcome(_reference.scatter_rows, src, counts))
    if fast[0] == "ok":
        assert all(np.shares_memory(p, src) for p in fast[1] if p.size)
