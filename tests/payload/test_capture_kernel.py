"""The payload capture kernel, compiled == its Python twin (the spec) on generated records: the
same answer (bytes held, or -1 with nothing appended) and the same columns after."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from serving.payload import _reference
from serving.payload.block import Block
from serving.payload.record import Policy
from tests.compiled import compiled, impls, needs_compiled

SINK = Policy(1.0, frozenset(), "sink", 10, 1.0, 0)
DTYPES = [np.float32, np.float64, np.int64, np.uint8, np.bool_, np.float16]


@st.composite
def array(draw: st.DrawFn, rows: int) -> np.ndarray:
    """A record's array: numeric rows of any row shape, text, or no batch dimension."""
    pick = draw(st.integers(0, 7))
    if pick == 0:
        return np.array(["a", "bc", None][:rows], dtype=object)
    if pick == 1:
        return np.array(draw(st.floats(width=32)), np.float32)  # 0-d
    tail = tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
    return draw(hnp.arrays(draw(st.sampled_from(DTYPES)), (rows, *tail)))


@st.composite
def other(draw: st.DrawFn, a: np.ndarray, rows: int) -> Any:
    """Mostly the same kind of array again (other values); else something that may not fit."""
    pick = draw(st.sampled_from(["same"] * 6 + ["rows", "dtype", "strided", "big-endian",
                                                "list", "fresh"]))
    if pick == "same" or a.ndim == 0 or a.dtype.kind == "O":
        return a.copy()
    if pick == "rows":
        return np.concatenate([a, a])
    if pick == "dtype":
        with np.errstate(all="ignore"):  # NaN to int: any value will do
            return a.astype(np.int32 if a.dtype != np.int32 else np.float32)
    if pick == "strided":
        return np.repeat(a, 2, axis=0)[::2]
    if pick == "big-endian":
        return a.astype(a.dtype.newbyteorder(">"))
    if pick == "list":
        return a.tolist()
    return draw(array(rows))


@st.composite
def records(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any],
                                      dict[str, Any], int, int]:
    rows = draw(st.sampled_from([0, 1, 1, 2, 3]))
    names = st.lists(st.sampled_from(["x", "y", "label", "é"]), min_size=1, max_size=3,
                     unique=True)
    ins = {n: draw(array(rows)) for n in draw(names)}
    outs = {n: draw(array(rows)) for n in draw(names)}
    ins2 = {n: draw(other(a, rows)) for n, a in ins.items()}
    outs2 = {n: draw(other(a, rows)) for n, a in outs.items()}
    if draw(st.integers(0, 9)) == 0:
        outs2 = dict(reversed(outs2.items()))  # the names in another order
    if draw(st.integers(0, 9)) == 0:
        ins2.pop(next(iter(ins2)))
    rows2 = rows if draw(st.integers(0, 5)) else rows + 1
    return ins, outs, ins2, outs2, rows, rows2


def columns(block: Block) -> list[Any]:
    return [bytes(c.data) if c.raw else [a.tobytes() for a in c.arrays]
            for c in (*block.inputs, *block.outputs)]


def run(impl: ModuleType, case: tuple[Any, ...]) -> tuple[Any, ...]:
    ins, outs, ins2, outs2, rows, rows2 = case
    block = Block(0, "m", "1", "primary", SINK, ins, outs, rows)
    layout = tuple(c.spec for c in (*block.inputs, *block.outputs))
    first = impl.copy_record(layout, ins, outs, rows)
    try:
        second: Any = impl.copy_record(layout, ins2, outs2, rows2)
    except Exception as exc:
        second = type(exc).__name__
    return first, second, columns(block)


@pytest.mark.parametrize("impl", impls(_reference))
def test_a_column_still_viewed_leaves_the_block_as_it_was(impl: ModuleType) -> None:
    x = {"x": np.ones((1, 4), np.float32)}
    outs = {"label": np.array([1]), "p": np.ones((1, 3), np.float32)}
    block = Block(0, "m", "1", "primary", SINK, x, outs, 1)
    layout = tuple(c.spec for c in (*block.inputs, *block.outputs))
    assert impl.copy_record(layout, x, outs, 1) == 16 + 8 + 12
    view = np.frombuffer(block.outputs[1].data, np.float32)  # holds the last column's bytes
    with pytest.raises(BufferError):
        impl.copy_record(layout, x, outs, 1)
    assert [len(c.data) for c in (*block.inputs, *block.outputs)] == [16, 8, 12]
    del view
    assert impl.copy_record(layout, x, outs, 1) == 36
    assert [len(c.data) for c in (*block.inputs, *block.outputs)] == [32, 16, 24]


def run_records(impl: ModuleType, case: tuple[Any, ...]) -> tuple[Any, ...]:
    """Records (the block's per-record fields) over the same pair, then past its capacity."""
    ins, outs, ins2, outs2, rows, rows2 = case
    block = Block(0, "m", "1", "primary", SINK, ins, outs, rows)
    records = impl.Records(tuple(c.spec for c in (*block.inputs, *block.outputs)), True, 2,
                           1 << 20)
    added = [records.add("a", 1.5, 0.25, ins, outs, rows),
             records.add("b", 2, 1, ins2, outs2, rows2),
             records.add("c", 3.0, 0.5, ins, outs, rows),
             records.add("d", 4.0, 0.5, ins, outs, rows)]  # past its capacity of 2: -1
    n = len(records)
    fields = (records.ids, records.times(0, n), records.latencies(-1, 9), records.ends(0, n),
              [records.size(i) for i in range(n)], records.nbytes, records.time(n - 1))
    with pytest.raises(IndexError):
        records.size(n)
    return added, fields, columns(block)


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(records())
def test_compiled_matches_the_twin(case: tuple[Any, ...]) -> None:
    """copy_record, then Records (the block's per-record fields), on the same pair."""
    fast = run(compiled, case)  # type: ignore[arg-type]
    assert fast == run(_reference, case)
    assert fast[0] >= 0  # a block always takes its first record
    fast_records = run_records(compiled, case)  # type: ignore[arg-type]
    assert fast_records == run_records(_reference, case)
    assert fast_records[0][-1] == -1
