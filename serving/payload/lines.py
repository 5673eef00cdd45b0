"""Many logged records as JSON Lines at once, byte for byte what `record.json_line` writes for
each (it is the spec; tests/payload/test_lines.py compares them).

The writer thread renders a pass's records column by column instead of record by record: the
ids, versions and routes in one orjson call each, the times and latencies as vectors, and
each input and output over the rows of every record in one orjson call on the concatenated
arrays, split back into rows (a number's JSON holds no bracket or comma, and a string's no
unescaped quote). The lines are then joined from those pieces and constant text. Rendering
record by record built a dict and a dozen objects per record and cost 4-12 us of the core the
event loop runs on; this costs 1.6 us a record (iris) on a warm cache, 3.2 us in the server,
where the records are cold when the writer reaches them (benchmarks/bench_payload_inproc.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import suppress
from itertools import pairwise
from operator import attrgetter, itemgetter

import numpy as np
import orjson

from serving.payload.record import NUMPY, Logged, input_arrays, json_line, plain

Piece = bytes | list[bytes]  # constant text, or one piece per record


def json_lines(records: Sequence[Logged]) -> bytes:
    """The records' JSON Lines, each ending in a newline, in order."""
    if not records:
        return b""
    ids, times, models, versions, routes, ins, outs, lats = list(zip(*records, strict=True))[:8]
    inputs = [i if type(i) is dict else input_arrays(i) for i in ins]
    names = list(zip(map(tuple, inputs), map(tuple, outs), strict=True))
    n = len(records)
    if names.count(names[0]) == n:  # the usual pass: one signature
        bounds = [0, n]
    else:  # runs of records with the same input and output names, in order
        bounds = [0, *(i for i in range(1, n) if names[i] != names[i - 1]), n]
    out: list[bytes] = []
    for start, end in pairwise(bounds):
        if end - start == 1:
            out.append(json_line(records[start]) + b"\n")
            continue
        run = slice(start, end)
        out.append(_interleave([
            b'{"id":"', _strings(ids[run]), b'","time":"', *_times(times[run]),
            b'Z","model":"', _strings(models[run]), b'","version":"', _strings(versions[run]),
            b'","route":"', _strings(routes[run]), b'","latency_ms":', _latencies(lats[run]),
            *_columns(b',"inputs":{', names[start][0], inputs[run]),
            *_columns(b'},"outputs":{', names[start][1], outs[run]),
            b"}}\n",
        ], end - start))
    return b"".join(out)


def _strings(values: Sequence[str]) -> Piece:
    """Each string's JSON between its quotes (a quote inside one is escaped, so '","' only
    ever separates two); one piece when they are all the same (a model, version, route)."""
    if values.count(values[0]) == len(values):
        return orjson.dumps(values[0])[1:-1]
    return orjson.dumps(values)[2:-2].split(b'","')


def _latencies(seconds: Sequence[float]) -> list[bytes]:
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
    return orjson.dumps(values)[1:-1].split(b",")


def _times(times: Sequence[float]) -> list[Piece]:
    """RFC 3339 up to the microseconds, as record.iso_time writes them (the same float
    arithmetic, on a vector), and the "." between seconds and microseconds."""
    t = np.array(times, np.float64)
    whole = np.trunc(t)
    micros = ((t - whole) * 1e6).astype(np.int64).tolist()
    seconds = whole.astype(np.int64).tolist()
    day = {s: time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(s)).encode()
           for s in set(seconds)}
    digits = (b"%06d," * len(micros) % tuple(micros))[:-1].split(b",")
    if len(day) == 1:  # the usual pass: within one second
        return [day[seconds[0]], digits]
    return [list(map(day.__getitem__, seconds)), digits]


def _columns(opening: bytes, names: tuple[str, ...],
             records: Sequence[dict[str, np.ndarray]]) -> list[Piece]:
    """`opening`, then each named array of the records as `"name":<json>`, comma-separated."""
    pieces: list[Piece] = [opening]
    for n, name in enumerate(names):
        pieces.append(b"%s%s:" % (b"," if n else b"", orjson.dumps(name)))
        pieces.extend(_column(list(map(itemgetter(name), records))))
    return pieces


def _column(arrays: list[np.ndarray]) -> list[Piece]:
    """Each array's JSON as `record.plain` writes it: arrays of one numeric dtype and row
    shape (no empty dimension) by one orjson call split into rows, others one by one."""
    first = arrays[0]
    d = first.ndim
    joined = None
    if (d and first.dtype.kind in "biuf" and all(first.shape[1:])
            and list(map(attrgetter("dtype"), arrays)).count(first.dtype) == len(arrays)):
        with suppress(ValueError):  # rows of another shape
            joined = np.concatenate(arrays)
    if joined is not None:
        text = orjson.dumps(joined, option=NUMPY)
        sep = b"]" * (d - 1) + b"," + b"[" * (d - 1)
        counts = list(map(len, arrays))
        if counts.count(1) == len(counts):  # a row each: the usual request
            return [b"[" * d, text[d:-d].split(sep), b"]" * d]
        rows = text[d:-d].split(sep) if sum(counts) else []
        at, each = 0, []
        for c in counts:
            each.append(b"[" * d + sep.join(rows[at:at + c]) + b"]" * d if c else b"[]")
            at += c
        return [each]
    return [[orjson.dumps(plain(a), option=NUMPY) for a in arrays]]


def _interleave(pieces: list[Piece], n: int) -> bytes:
    """The `n` lines: for each record, every piece in order (constant text, or its own)."""
    merged: list[Piece] = []
    for p in pieces:  # adjacent constants as one
        if isinstance(p, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += p
        else:
            merged.append(p)
    k = len(merged)
    flat: list[bytes] = [b""] * (n * k)
    for j, p in enumerate(merged):
        flat[j::k] = [p] * n if isinstance(p, bytes) else p
    return b"".join(flat)
