"""One logged request: what the request path hands over (references only), and how the writer
thread renders it as a JSON Lines record or as a pair of CloudEvents."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np
import orjson

from serving.protocol.datatypes import NUMPY_DTYPES
from serving.types import Tensor

NUMPY = orjson.OPT_SERIALIZE_NUMPY
# "<kind><itemsize>" of a numpy dtype -> its V2 datatype (anything else is written as BYTES)
_V2_TYPES = {f"{d.kind}{d.itemsize}": name for name, d in NUMPY_DTYPES.items()
             if name != "BYTES"}


class Policy(NamedTuple):
    """A model's logging settings as the request path reads them (built once per
    model.toml)."""

    sample: float
    keys: frozenset[str]
    sink: str  # "" with no sink: predictions are still kept for feedback
    segment_records: int
    segment_s: float
    recent: int


OFF = Policy(0.0, frozenset(), "", 1, 1.0, 0)  # not logged


Inputs = list[Tensor] | dict[str, np.ndarray]  # the request's decoded inputs, or by name
Outputs = dict[str, np.ndarray]

# One logged record as a tuple, as a block gives its records back (`Block.records`: for the
# CloudEvents sink, and for `json_line`, the spec of the JSON Lines renderer): id, time (unix
# seconds), model, version, route, inputs, outputs, latency (seconds), then its sink and
# segment limits (records, seconds).
Logged = tuple[str, float, str, str, str, Inputs, Outputs, float, str, int, float]


class Answer(NamedTuple):
    """What feedback joins: one logged answer reduced to its prediction (the label or value
    per row), made when feedback asks (from a block of the store of recent predictions, or
    from a segment)."""

    id: str
    time: float
    model: str
    version: str
    route: str
    kind: str  # "class", "value", or "" when no output can be compared with a truth
    values: np.ndarray | None  # one per row


def prediction(outputs: dict[str, np.ndarray]) -> tuple[str, np.ndarray] | None:
    """("class", labels per row) from the first label output, else ("value", the first value
    per row) from the first numeric one; None when nothing can be compared."""
    for arr in outputs.values():
        if arr.dtype.kind in "iubOUS" and arr.ndim >= 1:
            return "class", arr if arr.ndim == 1 else arr.reshape(len(arr), -1)[:, 0]
    for arr in outputs.values():
        if arr.dtype.kind == "f" and arr.ndim >= 1:
            return "value", arr.reshape(len(arr), -1)[:, 0]
    return None


def answer(rid: str, t: float, model: str, version: str, route: str,
           outputs: Outputs) -> Answer:
    """A logged answer reduced to what feedback needs."""
    pred = prediction(outputs)
    kind, values = pred if pred is not None else ("", None)
    return Answer(rid, t, model, version, route, kind, values)


_second: list[Any] = [-1, ""]  # the last whole second formatted (writer thread only)


def iso_time(t: float) -> str:
    """RFC 3339 in UTC with microseconds, as CloudEvents' `time` and the records write it
    (the date part is formatted once per second: datetime's formatting took ~25 us)."""
    whole = int(t)
    if whole != _second[0]:
        _second[0], _second[1] = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_second[1]}.{int((t - whole) * 1e6):06d}Z"


def plain(arr: np.ndarray) -> Any:
    """An array orjson can write: numeric ones as they are (contiguous), text as strings."""
    if arr.dtype.kind in "OSU":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else x
                for x in arr.ravel().tolist()] if arr.ndim <= 1 else [
                    plain(row) for row in arr]
    return np.ascontiguousarray(arr)


def input_arrays(inputs: Inputs) -> dict[str, np.ndarray]:
    """The inputs by name, each shaped as the request sent it."""
    if isinstance(inputs, dict):
        return inputs
    return {t.name: np.asarray(t.data).reshape(t.shape) for t in inputs}


def json_line(r: Logged) -> bytes:
    """The JSON Lines record: one object per request, inputs and outputs by their signature
    names (arrays of rows). The spec `lines.json_lines` renders many at once."""
    rid, t, model, version, route, inputs, outputs, latency_s = r[:8]
    doc = {
        "id": rid, "time": iso_time(t), "model": model, "version": version,
        "route": route, "latency_ms": round(latency_s * 1e3, 3),
        "inputs": {k: plain(v) for k, v in input_arrays(inputs).items()},
        "outputs": {k: plain(v) for k, v in outputs.items()},
    }
    return orjson.dumps(doc, option=NUMPY)


def _tensors(arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    out = []
    for name, arr in arrays.items():
        kind = _V2_TYPES.get(f"{arr.dtype.kind}{arr.dtype.itemsize}", "BYTES")
        out.append({"name": name, "datatype": kind, "shape": list(arr.shape),
                    "data": plain(arr.ravel())})
    return out


def event_bodies(r: Logged) -> tuple[bytes, bytes]:
    """The V2 request and response bodies of a CloudEvents pair (KServe's logger sends the
    request and the response as two events with the same id)."""
    rid, _t, model, version, _route, inputs, outputs = r[:7]
    request = {"id": rid, "inputs": _tensors(input_arrays(inputs))}
    response = {"model_name": model, "model_version": version, "id": rid,
                "outputs": _tensors(outputs)}
    return orjson.dumps(request, option=NUMPY), orjson.dumps(response, option=NUMPY)
