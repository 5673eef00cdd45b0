"""The writer's bulk renderer writes byte for byte what `record.json_line` writes per record
(its spec): random signatures, dtypes, shapes, values (NaN, infinities, text), ids, times and
latencies, records of several signatures in one pass, inputs as tensors or by name."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from serving.payload.block import Block
from serving.payload.lines import block_lines
from serving.payload.record import Logged, Policy, input_arrays, json_line
from serving.types import Tensor

NUMERIC = [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8,
           np.uint64, np.bool_]
NAMES = st.sampled_from(["input", "label", "probabilities", 'q"uote', "é", "a\\b", ""])


def json_lines(records: list[Logged]) -> bytes:
    """The records' JSON Lines, each ending in a newline, in order (through blocks, as the
    request path keeps them: a run of records that fit one block renders at once)."""
    out: list[bytes] = []
    block: Block | None = None
    for r in records:
        rid, t, model, version, route, ins, outs, latency, sink, seg_records, seg_s = r
        inputs = ins if type(ins) is dict else input_arrays(ins)
        rows = next((len(a) for a in inputs.values() if a.ndim), 0)
        if block is None or (block.model, block.version, block.route) != (model, version, route) \
                or block.add(rid, t, latency, inputs, outs, rows) < 0:
            if block is not None:
                out.append(block_lines(block))
            policy = Policy(1.0, frozenset(), sink or "-", seg_records, seg_s, 0)
            block = Block(0, model, version, route, policy, inputs, outs, rows)
            block.add(rid, t, latency, inputs, outs, rows)
    if block is not None:
        out.append(block_lines(block))
    return b"".join(out)


def spec(records: list[Logged]) -> bytes:
    return b"".join(json_line(r) + b"\n" for r in records)


@st.composite
def column(draw: st.DrawFn, rows: int) -> np.ndarray:
    """One record's array: numeric of any dtype and shape (rows first), or text."""
    tail = tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
    if draw(st.integers(0, 5)) == 0:  # BYTES: bytes or str, as the decoders give them
        words = st.one_of(st.binary(max_size=4), st.text(max_size=4))
        return np.array([*draw(st.lists(words, min_size=rows, max_size=rows)), None],
                        dtype=object)[:rows]
    dtype = np.dtype(draw(st.sampled_from(NUMERIC)))
    return draw(hnp.arrays(dtype, (rows, *tail)))


@st.composite
def variant(draw: st.DrawFn, a: np.ndarray) -> np.ndarray:
    """Mostly the run's array again; else with other rows, or another array altogether."""
    pick = draw(st.sampled_from(["same"] * 5 + ["twice", "none", "other"]))
    if pick == "other":
        return draw(column(draw(st.integers(0, 2))))
    return {"same": a, "twice": np.concatenate([a, a]), "none": a[:0]}[pick].copy()


@st.composite
def signature(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    inputs = draw(st.lists(NAMES, min_size=1, max_size=2, unique=True))
    outputs = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    return inputs, outputs


@st.composite
def records(draw: st.DrawFn) -> list[Logged]:
    """A pass: runs of records sharing a signature, arrays drawn per run and mostly shared
    by its records (the usual pass: one dtype and row shape per column), sometimes not."""
    out: list[Logged] = []
    for _ in range(draw(st.integers(1, 3))):
        ins, outs = draw(signature())
        rows = draw(st.sampled_from([1, 1, 1, 0, 2]))
        base = {n: draw(column(rows)) for n in ins + outs}
        for _ in range(draw(st.integers(1, 6))):
            arrays = {n: draw(variant(a)) for n, a in base.items()}
            if draw(st.booleans()):  # a row of NaN or infinity where floats are
                for a in arrays.values():
                    if a.dtype.kind == "f" and a.size:
                        a.flat[0] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
            inputs: Any = {n: arrays[n] for n in ins}
            if draw(st.booleans()):  # as the tensors the decoders make (flat data)
                inputs = [Tensor(n, "FP32", a.shape, a.ravel()) for n, a in inputs.items()]
            rid = draw(st.text(max_size=8))
            t = draw(st.floats(1e9, 2e9))
            latency = draw(st.one_of(st.floats(0, 100), st.integers(0, 10**6).map(
                lambda k: (k + 0.5) / 1e6)))  # exactly between two microseconds, in decimal
            out.append((rid, t, "m", draw(st.sampled_from(["1", "2"])),
                        draw(st.sampled_from(["primary", "shadow"])), inputs,
                        {n: arrays[n] for n in outs}, latency, "sink", 10, 1.0))
    return out


@settings(max_examples=300, deadline=None)
@given(records())
def test_bulk_rendering_equals_the_per_record_spec(recs: list[Logged]) -> None:
    assert json_lines(recs) == spec(recs)


def test_the_usual_pass_and_its_edges() -> None:
    """One signature, a row each, across a second's boundary, latencies a half apart."""
    now = float(int(time.time()))
    recs: list[Logged] = [
        (f"id-{i}", now - 0.5 + i * 0.25, "iris", "1", "primary",
         {"input": np.array([[5.1, 3.5, 1.4, 0.2 * i]], np.float32)},
         {"label": np.array([i % 3]), "probabilities": np.array([[0.9, 1e-8, np.nan]],
                                                                np.float32)},
         latency, "sink", 10, 1.0)
        for i, latency in enumerate([0.0005, 0.0015, 0.0000005, 0.0000015, 0.1234565, 7.0])
    ]
    text = json_lines(recs)
    assert text == spec(recs) and text.count(b"\n") == 6
    first = orjson.loads(text.splitlines()[0])
    assert first["outputs"]["probabilities"] == [[0.9, 1e-8, None]]
    assert [orjson.loads(line)["latency_ms"] for line in text.splitlines()] == [
        round(r[7] * 1e3, 3) for r in recs]
    assert json_lines([]) == b""
    scalars = [(*r[:6], {"score": np.array(0.5 * i, np.float32)}, *r[7:])
               for i, r in enumerate(recs)]  # a model without a batch dimension
    assert json_lines(scalars) == spec(scalars)
