"""The payload capture kernels, compiled == their Python twins (the spec): copy_record and
Records on generated records (the same answer, bytes held or -1 with nothing appended, and the
same columns after), and the Tap on generated sequences of decisions, captures and writer
passes (the same ids, blocks, counts and answers)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from random import Random
from types import ModuleType
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from serving.logging_config import LoggingConfig
from serving.model_config import ModelConfig
from serving.payload import _reference
from serving.payload import block as payload_block
from serving.payload import log as payload_log
from serving.payload.block import Block
from serving.payload.log import PayloadLog
from serving.payload.record import Policy
from serving.types import Tensor
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


_CFGS = [  # a sink, the store only, sampled with routing keys, off
    dict(sample=1.0, sink="SINK", segment_records=1000), dict(sample=1.0, recent=50),
    dict(sample=0.5, routing_keys=("vip",)), {},
]
_X = np.arange(8, dtype=np.float32).reshape(2, 4)


def _record(kind: str, i: int) -> tuple[Any, dict[str, Any]]:
    """A logged request's inputs and outputs: as a model answers (the usual), of another
    dtype (a new block), the inputs as decoded tensors, or outputs no block can take."""
    x = _X[i % 2:i % 2 + 1] + i
    outs: dict[str, Any] = {"label": np.array([i % 3], np.int64), "p": x[:, :3] / 10}
    if kind == "dtype":
        return {"input": x.astype(np.float64)}, outs
    if kind == "tensors":
        return [Tensor("input", "FP32", x.shape, x)], outs
    if kind == "broken":
        return {"input": x}, {"label": [i]}
    return {"input": x}, outs


_OPS = st.lists(st.one_of(
    st.tuples(st.just("decide"), st.integers(0, 3), st.sampled_from([None, "", "r1", "vip"]),
              st.sampled_from([None, "", "vip", "k"])),
    st.tuples(st.just("capture"), st.integers(0, 3), st.sampled_from(["m", "n"]),
              st.sampled_from(["primary", "canary", "shadow"]),
              st.sampled_from(["usual"] * 6 + ["dtype", "tensors", "broken"]),
              st.sampled_from([-1, 1, 1, None])),
    st.tuples(st.just("drain"), st.booleans()),
), max_size=60)


def _state(log: PayloadLog, n: int, seen: list[Any]) -> None:
    """The log's counts, blocks and answers for the latest capture's id."""
    blocks = [*log._open.values(), *log._ready]
    seen.append((log.logged, log.buffered, dict(log.dropped), sorted(
        (b.model, b.route, b.start, b.ids, columns(b), b.core.ends(0, len(b)))
        for b in blocks)))
    seen.append([(a.version, a.route, a.kind, a.values.tolist())
                 for m in ("m", "n") for a in log.answers(m, f"id{n - 1}") or ()])


def _run_log(tap: Any, ops: list[tuple[Any, ...]], sink: Path, queued: bool = False) -> list[Any]:
    """The ops through a PayloadLog whose request path is `tap`: what each returned, and the
    log's state after each (`queued`: captures wait for the flush before each writer pass, and
    the state is compared only after those)."""
    seen: list[Any] = []
    impl = compiled if tap is getattr(compiled, "Tap", None) else _reference
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(payload_log, "Tap", tap)
        mp.setattr(payload_block, "Records", impl.Records)  # the Tap's own (SERVING_PUREPYTHON)
        mp.setattr(payload_log, "random", Random(7).random)  # the same draws on both sides
        log = PayloadLog(buffer=5, seal_s=0.0)
        if queued:  # no pass to schedule: the captures wait for log.flush()
            log._later = lambda flush: None  # type: ignore[method-assign]
        cfgs = [ModelConfig(logging=LoggingConfig(**{  # type: ignore[arg-type]
            k: (str(sink) if v == "SINK" else v) for k, v in c.items()})) for c in _CFGS]
        for n, op in enumerate(ops):
            if op[0] == "decide":
                rid = log.decide(cfgs[op[1]], op[2], op[3])
                seen.append(re.sub(r"^[0-9a-f]{12}-", "generated-", rid) if rid else rid)
            elif op[0] == "capture":
                _, c, model, route, kind, rows = op
                ins, outs = _record(kind, n)
                seen.append(log.capture(f"id{n}", model, "1", route, ins, outs, 0.5, cfgs[c],
                                        rows))
            else:
                log.flush()
                log.drain(force=op[1])
            if not queued or op[0] == "drain":
                _state(log, n, seen)
        log.flush()
        _state(log, len(ops), seen)
        log.stop()
    return seen


@needs_compiled
@settings(max_examples=150, deadline=None)
@given(_OPS, st.booleans())
@example(ops=[("capture", 0, "m", "primary", kind, 1)  # a new block opened within one flush
              for kind in ("usual", "dtype", "usual", "tensors", "usual")], queued=True)
@example(ops=[("capture", 0, "m", "primary", "usual", 1)] * 8, queued=True)  # past buffer=5
def test_the_compiled_tap_keeps_to_the_logs_own_methods(ops: list[tuple[Any, ...]],
                                                        queued: bool) -> None:
    """PayloadLog's request path through the compiled Tap (its fast path, and the log's own
    _decide and _capture for the rest) == through the twin, which calls only those: the same
    ids, blocks, counts, drops and answers after every step. `queued`: both Taps' captures
    wait, as for the loop's next pass, until a flush before each writer pass."""
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        fast = _run_log(compiled.Tap, ops, Path(a), queued)  # type: ignore[union-attr]
        assert fast == _run_log(_reference.Tap, ops, Path(b), queued)


_PART = st.sampled_from([b"", b"a", b"1.5", b"\x00", b"xyz", "é".encode()])


@st.composite
def pieces(draw: st.DrawFn) -> tuple[list[Any], int]:
    """Pieces of a block's lines for n records, now and then one that does not fit."""
    n = draw(st.integers(0, 5))
    out: list[Any] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["constant", "each", "split", "split", "bad"]))
        if kind == "constant":
            out.append(draw(_PART))
        elif kind == "each":
            out.append(draw(st.lists(_PART, min_size=n, max_size=n)))
        elif kind == "split":
            sep = draw(st.sampled_from([b",", b'","', b"],[", b"]],[["]))
            out.append((sep.join(draw(st.lists(_PART, min_size=n, max_size=n))), sep))
        else:  # a record short or over, an empty separator, text, not a piece
            out.append(draw(st.sampled_from([[b"x"] * (n + 1), [b"x"] * max(n - 1, 0),
                                             (b"a,b,c,d,e,f,g", b","), (b"a", b""), ("a", b","),
                                             ["a"] * n, (b"a",), 3])))
    return out, n


def _lines(impl: Any, case: tuple[list[Any], int]) -> Any:
    try:
        return impl.interleave(*case)
    except (TypeError, ValueError):
        return "refused"


@needs_compiled
@settings(max_examples=500, deadline=None)
@given(pieces())
def test_interleave_matches_the_twin(case: tuple[list[Any], int]) -> None:
    """The lines of a block from its pieces: the same bytes, or both refuse."""
    assert _lines(compiled, case) == _lines(_reference, case)


_WHOLE = st.one_of(st.integers(-(2**24) + 1, 2**24 - 1), st.integers(-(10**15) + 1, 10**15 - 1),
                   st.sampled_from([2**24, -(2**24), 10**15, 0]))


@st.composite
def whole_arrays(draw: st.DrawFn) -> Any:
    """Float arrays of whole numbers in and out of range, now and then one that is not all
    whole, not finite, of another dtype or byte order, not contiguous, or empty."""
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float64, ">f8", np.int64]))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    values = draw(st.lists(_WHOLE, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    a = np.array(values, np.float64).reshape(shape)
    spoil = draw(st.sampled_from(["", "", "", "half", "nan", "inf", "-0", "strided"]))
    if a.size and spoil in ("half", "nan", "inf", "-0"):
        a.flat[draw(st.integers(0, a.size - 1))] = {"half": 2.5, "nan": np.nan, "inf": -np.inf,
                                                   "-0": -0.0}[spoil]
    with np.errstate(invalid="ignore"):  # NaN as an int64
        a = a.astype(dtype)
    return a[..., ::2] if spoil == "strided" and a.ndim else a


@needs_compiled
@settings(max_examples=500, deadline=None)
@given(whole_arrays())
def test_whole_numbers_match_the_twin(a: Any) -> None:
    """The compiled writer of whole numbers: orjson's bytes when the twin says so, and None
    where it does not."""
    fast = compiled.whole_numbers_json(a)  # type: ignore[union-attr]
    assert fast == _reference.whole_numbers_json(a)
    if fast is not None:
        assert fast == orjson.dumps(a, option=orjson.OPT_SERIALIZE_NUMPY)


@needs_compiled
def test_every_whole_float32_in_range_is_written_as_orjson_writes_it() -> None:
    """All 2**25 - 1 of them, in one pass each (~2 s)."""
    step = 1 << 22
    for low in range(-(1 << 24) + 1, 1 << 24, step):
        a = np.arange(low, min(low + step, 1 << 24), dtype=np.float32)
        assert compiled.whole_numbers_json(a) == orjson.dumps(  # type: ignore[union-attr]
            a, option=orjson.OPT_SERIALIZE_NUMPY), low
