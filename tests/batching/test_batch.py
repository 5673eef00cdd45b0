"""One batch's gather and split, and the bounded per-thread buffer cache."""

from __future__ import annotations

import numpy as np
import pytest

from serving.batching.batch import KERNEL_GATHER_BYTES, BufferCache, gather, split


def test_buffer_cache_keeps_only_the_most_recently_used_shapes() -> None:
    cache = BufferCache(limit=3)
    like = np.zeros((1, 2), np.float32)
    kept = cache.get("x", (2,), like, 8)
    for width in range(3, 20):  # a model with a variable inner dimension sees many shapes
        cache.get("x", (width,), np.zeros((1, width), np.float32), 8)
        assert cache.get("x", (2,), like, 8) is kept  # in use: never evicted
    assert len(cache) == 3


def test_buffer_cache_grows_a_buffer_too_small_for_the_batch() -> None:
    cache = BufferCache()
    like = np.zeros((1, 4), np.int64)
    assert len(cache.get("x", None, like, 2)) == 2
    big = cache.get("x", None, like, 16)
    assert big.shape == (16, 4) and big.dtype == np.int64
    assert cache.get("x", None, like, 3) is big


def test_gather_copies_numeric_rows_and_concatenates_object_rows() -> None:
    parts = [
        {"n": np.array([[1, 2]], np.int32), "s": np.array([["a", b"b"]], dtype=object)},
        {"n": np.array([[3, 4], [5, 6]], np.int32), "s": np.array([["c", "d"], ["", "é"]],
                                                                   dtype=object)},
    ]
    feeds = gather(parts, ["n", "s"], None, 3, 8, BufferCache())
    np.testing.assert_array_equal(feeds["n"], [[1, 2], [3, 4], [5, 6]])
    assert feeds["s"].dtype == object
    assert feeds["s"].tolist() == [["a", b"b"], ["c", "d"], ["", "é"]]


@pytest.mark.parametrize("width", [3, KERNEL_GATHER_BYTES // 8], ids=["numpy", "kernel"])
def test_gather_gives_the_same_rows_by_numpy_and_by_the_kernel(width: int) -> None:
    """Small batches are copied by one numpy call, big ones by the row kernel: same rows, in
    request order, from parts of any layout (a transposed part is not contiguous)."""
    rng = np.random.default_rng(0)
    parts = [{"x": rng.random((n, width))} for n in (1, 3, 2)]
    parts.append({"x": np.ascontiguousarray(rng.random((width, 2))).T})
    rows = sum(len(p["x"]) for p in parts)
    feeds = gather(parts, ["x"], None, rows, 4, BufferCache())
    assert (feeds["x"].nbytes < KERNEL_GATHER_BYTES) == (width == 3)
    np.testing.assert_array_equal(feeds["x"], np.concatenate([p["x"] for p in parts]))
    with pytest.raises(ValueError):  # a part of another width never lands in the buffer
        gather([*parts, {"x": np.zeros((1, width + 1))}], ["x"], None, rows + 1, 4,
               BufferCache())


def test_split_gives_each_request_its_rows() -> None:
    out = {"y": np.arange(12).reshape(6, 2), "s": np.array(list("abcdef"), dtype=object)}
    pieces = split(out, [1, 3, 2])
    assert [p["y"].tolist() for p in pieces] == [[[0, 1]], [[2, 3], [4, 5], [6, 7]],
                                                 [[8, 9], [10, 11]]]
    assert [p["s"].tolist() for p in pieces] == [["a"], ["b", "c", "d"], ["e", "f"]]
