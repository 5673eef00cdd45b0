"""Requests for tabular models: one input per column, each with its own datatype.

Clients of DataFrame pipelines send each column as `[N]` or `[N, 1]` (MLServer's pandas codec
sends `[N, 1]`, Triton clients often `[N]`) and send numbers in the datatype their DataFrame
had (pandas' FP64 for a model converted with FP32 inputs). `conform` meets them where that is
unambiguous, and names the column in every refusal, before the signature check.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson

from serving.errors import BadRequest
from serving.protocol._reference import finish_numbers
from serving.protocol.datatypes import NUMPY_DTYPES
from serving.signature import Signature
from serving.types import Tensor, TensorSpec

# Datatypes a column's numbers may be converted between (JSON numbers carry no width).
_NUMERIC = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
                      "FP16", "FP32", "FP64"})


# MLServer's pandas codec marks an object column it could not send as plain strings (values of
# mixed types) with this content type: each element is then one JSON document.
PD_JSON = "pd_json"


def pd_json_strings(data: np.ndarray, name: str) -> np.ndarray:
    """A `pd_json` BYTES column as the strings it encodes: JSON strings as themselves, null as
    "" (a missing value); anything else is not a string column's value."""
    out = np.empty(len(data), dtype=object)
    for i, x in enumerate(data):
        try:
            value = orjson.loads(x)
        except orjson.JSONDecodeError:
            raise BadRequest(f"column {name!r}: element {i} is not JSON (content_type "
                             f"{PD_JSON})") from None
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"column {name!r}: element {i} is {type(value).__name__} "
                             f"{str(value)[:32]!r}, not a string")
        out[i] = value or ""
    return out


def conform(inputs: list[Tensor], signature: Signature) -> list[Tensor]:
    """`inputs` with shapes and numeric datatypes matched to the signature where unambiguous.

    The common case (every input in the model's order, datatype and rank) costs a few
    comparisons per input; anything else takes the slow path, which converts or refuses.
    """
    specs = signature.inputs
    if len(specs) == 1 and len(inputs) == 1:  # most models: three comparisons
        t, s = inputs[0], specs[0]
        if t.name == s.name and t.datatype == s.datatype and len(t.shape) == len(s.shape):
            return inputs
    elif len(inputs) == len(specs):
        rows = -1
        for t, s in zip(inputs, specs, strict=True):
            if t.name != s.name or t.datatype != s.datatype or len(t.shape) != len(s.shape):
                break
            if t.shape:
                if rows == -1:
                    rows = t.shape[0]
                elif t.shape[0] != rows:
                    break
        else:
            return inputs
    return _conform_slow(inputs, specs)


def _conform_slow(inputs: list[Tensor], specs: Sequence[TensorSpec]) -> list[Tensor]:
    tabular = len(specs) > 1
    by_name = {s.name: s for s in specs}
    out: list[Tensor] = []
    for t in inputs:
        spec = by_name.get(t.name)
        if spec is None:
            if tabular:
                raise BadRequest(f"unknown input {t.name[:64]!r}; this model takes columns "
                                 f"{', '.join(by_name)}")
            out.append(t)  # the signature check words it
            continue
        out.append(_conform_one(t, spec, tabular))
    if tabular:
        _check_columns(out, specs)
    return out


def _conform_one(t: Tensor, spec: TensorSpec, tabular: bool) -> Tensor:
    data = t.data
    datatype = t.datatype
    if datatype != spec.datatype:
        if tabular and datatype in _NUMERIC and spec.datatype in _NUMERIC:
            try:
                data = _convert(data, spec.datatype, t.finite)
            except ValueError as exc:
                raise BadRequest(f"column {t.name!r}: expected {spec.datatype}, got {datatype} "
                                 f"({exc})") from None
            datatype = spec.datatype
        elif tabular:
            raise BadRequest(f"column {t.name!r}: expected {spec.datatype}, got {datatype}")
    shape = _column_shape(t.shape, spec.shape)
    if datatype is t.datatype and shape is t.shape:
        return t
    return Tensor(t.name, datatype, shape, data, t.parameters, t.finite)


def _convert(data: np.ndarray, datatype: str, finite: bool) -> np.ndarray:
    """Numbers to `datatype`: checked like JSON numbers, except that data not known to be
    finite (binary, or nulls as NaN) keeps its NaN/Infinity for the signature's NaN check."""
    dtype = NUMPY_DTYPES[datatype]
    if not finite and dtype.kind == "f" and data.dtype.kind == "f":
        with np.errstate(over="ignore"):
            return data.astype(dtype)
    return finish_numbers(data, datatype)[0]


def _column_shape(shape: tuple[int, ...], want: tuple[int, ...]) -> tuple[int, ...]:
    """`[N]` for a model column of `[-1, 1]` and `[N, 1]` for `[-1]`; anything else as sent."""
    if len(shape) == 1 and len(want) == 2 and want[0] == -1 and want[1] == 1:
        return (shape[0], 1)
    if len(shape) == 2 and shape[1] == 1 and len(want) == 1 and want[0] == -1:
        return (shape[0],)
    return shape


def _check_columns(inputs: list[Tensor], specs: Sequence[TensorSpec]) -> None:
    """Missing, repeated and ragged columns, each named."""
    seen: dict[str, int] = {}
    for t in inputs:
        if t.name in seen:
            raise BadRequest(f"column {t.name!r} is given more than once")
        seen[t.name] = t.shape[0] if t.shape else 1
    missing = [s.name for s in specs if s.name not in seen]
    if missing:
        raise BadRequest(f"missing input {', '.join(repr(n) for n in missing)}; this model "
                         f"takes columns {', '.join(s.name for s in specs)}")
    batched = [s for s in specs if s.shape and s.shape[0] == -1]
    if len(batched) > 1:
        first = batched[0].name
        for s in batched[1:]:
            if seen[s.name] != seen[first]:
                raise BadRequest(
                    f"ragged columns: {first!r} has {seen[first]} rows but {s.name!r} has "
                    f"{seen[s.name]}"
                )
