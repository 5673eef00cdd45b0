"""The words every module uses: tensors, requests, responses and signatures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class Tensor:
    """A named tensor: V2 datatype, shape, and the data as a numpy array (BYTES: object array)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)
    # JSON cannot spell NaN or Infinity and the JSON decoders refuse overflow, so tensors that
    # came as JSON skip the per-request finiteness scan; binary tensors do not.
    finite: bool = False


@dataclass(slots=True)
class RequestedOutput:
    """One entry of a V2 request's `outputs` list."""

    name: str
    binary: bool | None = None
    classification: int = 0


@dataclass(slots=True)
class InferRequest:
    """A decoded inference request, independent of the wire protocol it came in."""

    inputs: list[Tensor]
    id: str | None = None
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_outputs: bool = False  # request-level `binary_data_output`


@dataclass(slots=True)
class InferResponse:
    """The answer for one request: outputs in the order they should be written."""

    model_name: str
    model_version: str
    outputs: list[Tensor]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a model's signature; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TensorSpec:
        return cls(str(obj["name"]), str(obj["datatype"]), tuple(int(d) for d in obj["shape"]))
