"""TensorFlow-Serving-style V1 predict: `instances` (row form) or `inputs` (columnar form)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from serving.errors import BadRequest
from serving.protocol.columns import conform
from serving.protocol.jsondata import cast_numbers, loads
from serving.signature import Signature
from serving.types import InferRequest, Tensor, TensorSpec


def _tensor(value: Any, spec: TensorSpec) -> Tensor:
    if spec.datatype == "BYTES":
        return _strings(value, spec)
    try:
        arr = np.array(value)
    except ValueError:
        raise BadRequest(
            f"input {spec.name!r}: values are ragged: nested lists have different lengths"
        ) from None
    shape = tuple(arr.shape)
    data = cast_numbers(arr, spec.datatype, spec.name)
    return Tensor(spec.name, spec.datatype, shape, data, finite=True)


def _strings(value: Any, spec: TensorSpec) -> Tensor:
    """A string column (a BYTES input): strings only, numbers are refused."""
    try:
        arr = np.array(value, dtype=object)
    except ValueError:
        arr = None
    if arr is None or (arr.ndim and any(isinstance(x, list) for x in arr.flat)):
        raise BadRequest(
            f"input {spec.name!r}: values are ragged: nested lists have different lengths"
        )
    flat = arr.ravel()
    for x in flat:
        if not isinstance(x, str):
            raise BadRequest(
                f"column {spec.name!r}: expected BYTES (strings), got {type(x).__name__}"
            )
    return Tensor(spec.name, "BYTES", tuple(arr.shape), flat, finite=True)


def decode_request(body: bytes, signature: Signature) -> tuple[InferRequest, bool]:
    """The request and whether it used the row (`instances`) form."""
    if not body:
        raise BadRequest("empty request body: expected {\"instances\": [...]} or {\"inputs\": ...}")
    obj = loads(body)
    if not isinstance(obj, dict):
        raise BadRequest("the request must be a JSON object")
    has_rows, has_cols = "instances" in obj, "inputs" in obj
    if has_rows == has_cols:
        raise BadRequest("give exactly one of 'instances' (row form) or 'inputs' (columnar form)")
    specs = signature.inputs
    if has_rows:
        return InferRequest(conform(_row_tensors(obj["instances"], specs), signature)), True
    return InferRequest(conform(_column_tensors(obj["inputs"], specs), signature)), False


def _row_tensors(rows: object, specs: Sequence[TensorSpec]) -> list[Tensor]:
    """`instances`: a list of rows, each a value (one input) or an object naming every input."""
    if not isinstance(rows, list) or not rows:
        raise BadRequest("'instances' must be a non-empty list")
    if len(specs) == 1 and not isinstance(rows[0], dict):
        return [_tensor(rows, specs[0])]
    columns: dict[str, list[Any]] = {s.name: [] for s in specs}
    for row in rows:
        if not isinstance(row, dict):
            raise BadRequest("each instance must be an object naming every input")
        for key in row:
            if key not in columns:
                raise BadRequest(f"unknown input {str(key)[:64]!r} in an instance")
        for s in specs:
            if s.name not in row:
                raise BadRequest(f"an instance is missing input {s.name!r}")
            columns[s.name].append(row[s.name])
    return [_tensor(columns[s.name], s) for s in specs]


def _column_tensors(cols: object, specs: Sequence[TensorSpec]) -> list[Tensor]:
    """`inputs`: one input's values, or an object mapping every input's name to its values."""
    if isinstance(cols, dict):
        names = {s.name for s in specs}
        for key in cols:
            if key not in names:
                raise BadRequest(f"unknown input {str(key)[:64]!r}")
        missing = [s.name for s in specs if s.name not in cols]
        if missing:
            raise BadRequest(f"missing input {missing[0]!r}")
        return [_tensor(cols[s.name], s) for s in specs]
    if len(specs) == 1:
        return [_tensor(cols, specs[0])]
    raise BadRequest("'inputs' must be an object naming every input of this model")


def encode_response(outputs: list[Tensor], row_form: bool) -> bytes:
    if row_form:
        if len(outputs) == 1:
            return orjson.dumps({"predictions": _values(outputs[0])})
        columns = [(t.name, _values(t)) for t in outputs]
        n = len(columns[0][1])
        rows = [{name: values[i] for name, values in columns} for i in range(n)]
        return orjson.dumps({"predictions": rows})
    if len(outputs) == 1:
        return orjson.dumps({"outputs": _values(outputs[0])})
    return orjson.dumps({"outputs": {t.name: _values(t) for t in outputs}})


def _values(t: Tensor) -> list[Any]:
    data = t.data.reshape(t.shape)
    if t.datatype == "BYTES":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in data.tolist()]
    return data.tolist()  # type: ignore[no-any-return]
