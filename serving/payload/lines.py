"""A block of logged records as JSON Lines at once, byte for byte what `record.json_line`
writes for each (it is the spec; tests/payload/test_lines.py compares them).

The writer thread renders a block column by column instead of record by record: the ids in
one orjson call, the times and latencies as vectors, and each input and output in one orjson
call on a view of the column's bytes, whose records a separator tells apart (a number's JSON
holds no bracket or comma, and a string's no unescaped quote). The compiled `interleave`
(ext/_payload.pxi) then copies each record's part of every text, and the constant text
between them, into the lines, with no object made a record. Rendering record by record built
a dict and a dozen objects per record and cost 4-12 us of the core the event loop runs on;
splitting the texts into bytes and joining them cost ~1.0 us a record for iris and ~2.4 us
for digits; this costs ~0.6 and ~1.7 us (64 floats: orjson's formatting is most of it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np
import orjson

from serving.payload.block import Block, Column
from serving.payload.record import NUMPY, json_line, plain

if os.environ.get("SERVING_PUREPYTHON"):  # as serving/payload/block.py
    from serving.payload._reference import interleave, whole_numbers_json
else:
    from serving._kernels import interleave, whole_numbers_json

# constant text, one piece per record, or (text, separator): the records' pieces in one text
Piece = bytes | list[bytes] | tuple[bytes, bytes]


def block_lines(b: Block) -> bytes:
    """A block's records from its `start` as JSON Lines."""
    s, n = b.start, len(b)
    if n - s <= 1:
        return b"".join(json_line(r) + b"\n" for r in b.records())
    core = b.core
    first = core.end(s - 1) if s else 0
    ends = core.ends(s, n)
    counts = [e - p for p, e in zip([first, *ends[:-1]], ends, strict=True)]
    return _merged([
        b'{"id":"', _strings(b.ids[s:n]), b'","time":"', *_times(core.times(s, n)),
        b'Z","model":"', _quoted(b.model), b'","version":"', _quoted(b.version),
        b'","route":"', _quoted(b.route), b'","latency_ms":',
        _latencies(core.latencies(s, n)),
        *_columns(b',"inputs":{', b, b.inputs, first, counts),
        *_columns(b'},"outputs":{', b, b.outputs, first, counts),
        b"}}\n",
    ], n - s)


def _quoted(value: str) -> bytes:
    """A string's JSON between its quotes."""
    return orjson.dumps(value)[1:-1]


def _strings(values: Sequence[str]) -> Piece:
    """Each string's JSON between its quotes (a quote inside one is escaped, so '","' only
    ever separates two); one piece when they are all the same."""
    if values.count(values[0]) == len(values):
        return _quoted(values[0])
    return orjson.dumps(values)[2:-2], b'","'


def _latencies(seconds: Sequence[float]) -> Piece:
    """Milliseconds rounded to the microsecond, as json_line writes them: Python's round is
    correct to the last bit and numpy's may not be (it rounds the product by 1000, itself
    rounded) only within a rounding error of a half, which is checked."""
    ms = np.array(seconds, np.float64) * 1e3
    scaled = ms * 1e3
    whole = np.rint(scaled)
    near_half = np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5)
    doubt = np.flatnonzero(~((near_half > 1e-6) & (np.abs(scaled) < 2.0**32)))  # NaN: doubt
    values = (whole / 1e3).tolist()
    for i in doubt.tolist():
        values[i] = round(float(ms[i]), 3)
    return orjson.dumps(values)[1:-1], b","


def _times(times: Sequence[float]) -> list[Piece]:
    """RFC 3339 up to the microseconds, as record.iso_time writes them (the same float
    arithmetic, on a vector), and the "." between seconds and microseconds."""
    t = np.array(times, np.float64)
    whole = np.trunc(t)
    micros = ((t - whole) * 1e6).astype(np.int64).tolist()
    seconds = whole.astype(np.int64).tolist()
    day = {s: time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(s)).encode()
           for s in set(seconds)}
    digits = (b"%06d," * len(micros) % tuple(micros))[:-1], b","
    if len(day) == 1:  # the usual pass: within one second
        return [day[seconds[0]], digits]
    return [list(map(day.__getitem__, seconds)), digits]


def _columns(opening: bytes, b: Block, cols: list[Column], first: int,
             counts: list[int]) -> list[Piece]:
    """`opening`, then each column of the block's records from its `start` as
    `"name":<json>`, comma-separated."""
    pieces: list[Piece] = [opening]
    for n, c in enumerate(cols):
        pieces.append(b"%s%s:" % (b"," if n else b"", orjson.dumps(c.name)))
        if c.raw:
            pieces.extend(_split(c.rows(first, first + sum(counts)), counts))
        else:
            pieces.append([orjson.dumps(plain(a), option=NUMPY) for a in c.arrays[b.start:]])
    return pieces


def _split(joined: np.ndarray, counts: list[int]) -> list[Piece]:
    """Each record's rows of a raw column as `record.plain` writes them: one orjson call on
    all the rows (or the compiled writer of whole numbers, for floats that are all whole:
    counts, codes, pixels, one-hot columns), split into rows (a number's JSON holds no bracket
    or comma) and regrouped."""
    d = joined.ndim
    text = whole_numbers_json(joined) or orjson.dumps(joined, option=NUMPY)
    sep = b"]" * (d - 1) + b"," + b"[" * (d - 1)
    if counts.count(1) == len(counts):  # a row each: the usual request
        return [b"[" * d, (text[d:-d], sep), b"]" * d]
    rows = text[d:-d].split(sep) if len(joined) else []
    at, each = 0, []
    for c in counts:
        each.append(b"[" * d + sep.join(rows[at:at + c]) + b"]" * d if c else b"[]")
        at += c
    return [each]


def _merged(pieces: list[Piece], n: int) -> bytes:
    """The `n` lines: for each record, every piece in order (adjacent constants as one)."""
    merged: list[Piece] = []
    for p in pieces:
        if isinstance(p, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += p
        else:
            merged.append(p)
    return interleave(merged, n)
