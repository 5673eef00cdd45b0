"""A model's input/output signature and the checks every request passes before it is queued."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from serving.errors import BadRequest
from serving.types import Tensor, TensorSpec


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _finite(data: np.ndarray) -> bool:
    return data.dtype.kind != "f" or bool(np.isfinite(data).all())


Order = tuple[tuple[str, str, int, tuple[int, ...]], ...]  # name, datatype, rank, fixed tail


def ordered_feeds(
    tensors: Sequence[Tensor], order: Order, allow_nonfinite: bool
) -> tuple[dict[str, np.ndarray], int] | None:
    """The usual request of a batched model (every input in the model's order, of its
    datatype and shape, with the same rows, and finite: from JSON, scanned here for binary
    tensors, or NaN allowed): its feeds and rows, with one comparison per property. None for
    anything else: the general pass accepts it or words why not. The compiled twin
    (serving._kernels) is what the server runs; this is its spec, and what SERVING_PUREPYTHON
    runs."""
    if not tensors or len(tensors) != len(order):
        return None
    feeds: dict[str, np.ndarray] = {}
    rows = tensors[0].shape[0] if tensors[0].shape else 0
    for t, (name, datatype, rank, tail) in zip(tensors, order, strict=True):
        shape = t.shape
        if (t.name != name or t.datatype != datatype or len(shape) != rank
                or shape[0] != rows or shape[1:] != tail
                or not (t.finite or allow_nonfinite or _finite(t.data))):
            return None
        feeds[name] = t.data.reshape(shape)
    return (feeds, rows) if rows else None


if os.environ.get("SERVING_PUREPYTHON"):  # msgpack's switch, as serving/protocol/kernels.py
    _ordered_feeds = ordered_feeds
else:  # a broken build fails loudly
    from serving._kernels import ordered_feeds as _ordered_feeds


class Signature:
    """Inputs and outputs of a model version, with the per-request validation."""

    __slots__ = ("_in", "_order", "_out", "_tails", "batched", "input_names", "inputs",
                 "output_names", "outputs")

    def __init__(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self._in = {t.name: t for t in self.inputs}
        self._out = {t.name: t for t in self.outputs}
        self.input_names = tuple(self._in)
        self.output_names = tuple(self._out)
        # Inputs whose only variable dimension is the first: their shape check is one tuple
        # comparison of the rest.
        self._tails = {
            t.name: tuple(t.shape[1:]) for t in self.inputs
            if t.shape and t.shape[0] == -1 and -1 not in t.shape[1:]
        }
        # Batched when every input and output has a variable first dimension.
        self.batched = all(len(t.shape) >= 1 and t.shape[0] == -1 for t in self.inputs) and all(
            len(t.shape) >= 1 and t.shape[0] == -1 for t in self.outputs
        )
        # Batched, every input varying only in the first dimension: each input's name,
        # datatype, rank and fixed tail, for the in-order pass of check_inputs.
        self._order: Order | None = tuple(
            (t.name, t.datatype, len(t.shape), self._tails[t.name]) for t in self.inputs
        ) if self.batched and len(self._tails) == len(self.inputs) else None

    def output(self, name: str) -> TensorSpec:
        try:
            return self._out[name]
        except KeyError:
            raise BadRequest(
                f"unknown output {name[:64]!r}; this model has {', '.join(self.output_names)}"
            ) from None

    @staticmethod
    def _shape_fits(spec: TensorSpec, shape: Sequence[int]) -> bool:
        if len(shape) != len(spec.shape):
            return False
        return all(want in (-1, got) for want, got in zip(spec.shape, shape, strict=True))

    def check_inputs(
        self, tensors: Sequence[Tensor], allow_nonfinite: bool = False
    ) -> tuple[dict[str, np.ndarray], int]:
        """Feeds shaped for ONNX Runtime and the request's rows; BadRequest names any problem."""
        if self._order is not None:
            checked = _ordered_feeds(tensors, self._order, allow_nonfinite)
            if checked is not None:
                return checked
        return self._check_each(tensors, allow_nonfinite)

    def _check_each(
        self, tensors: Sequence[Tensor], allow_nonfinite: bool
    ) -> tuple[dict[str, np.ndarray], int]:
        """The general pass: inputs in any order, each looked up, every refusal worded."""
        feeds: dict[str, np.ndarray] = {}
        rows = -1
        for t in tensors:
            spec = self._in.get(t.name)
            if spec is None:
                raise BadRequest(
                    f"unknown input {t.name[:64]!r}; this model takes "
                    f"{', '.join(self.input_names)}"
                )
            if t.name in feeds:
                raise BadRequest(f"input {t.name!r} is given more than once")
            if t.datatype != spec.datatype:
                raise BadRequest(
                    f"input {t.name!r}: expected datatype {spec.datatype}, got {t.datatype}"
                )
            shape = t.shape
            tail = self._tails.get(t.name)  # the common case inline: one tuple comparison
            fits = (len(shape) == len(spec.shape) and shape[1:] == tail if tail is not None
                    else self._shape_fits(spec, shape))
            if not fits:
                raise BadRequest(
                    f"input {t.name!r}: expected shape {_shape_text(spec.shape)}, "
                    f"got {_shape_text(shape)}"
                )
            if self.batched:
                if rows == -1:
                    rows = shape[0]
                elif shape[0] != rows:
                    raise BadRequest(
                        f"inputs disagree on the batch dimension: {rows} and {shape[0]} rows"
                    )
            data = t.data
            if not allow_nonfinite and not t.finite and not _finite(data):
                raise BadRequest(f"input {t.name!r} contains NaN or Infinity")
            feeds[t.name] = data.reshape(shape)
        if len(feeds) != len(self.inputs):
            missing = [n for n in self.input_names if n not in feeds]
            raise BadRequest(f"missing input {', '.join(repr(n) for n in missing)}")
        if self.batched and rows == 0:
            raise BadRequest("inputs have zero rows")
        return feeds, max(rows, 1)
