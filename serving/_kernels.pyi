"""Types for the compiled hot path (ext/_kernels.pyx); the Python twins are the spec."""

from typing import Any

import numpy as np

NUMERIC_DATATYPES: frozenset[str]

def gather_rows(parts: list[np.ndarray], out: np.ndarray) -> int:
    """Copy each part's rows into `out` back to back; return the rows written."""

def scatter_rows(src: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Split `src` along axis 0 into consecutive views of counts[i] rows each."""

def split_tensor_data(body: bytes) -> tuple[bytes, list[tuple[int, int, int]]] | None:
    """Cut the inputs' numeric `data` arrays out of a V2 request: (skeleton, spans), or None."""

def decode_json_numbers(
    body: bytes, start: int, end: int, datatype: str
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Parse the JSON array body[start:end] into a flat array of `datatype`, and its shape."""

def numbers_from_list(data: object, datatype: str) -> np.ndarray | None:
    """Flat FP32/FP64/INT64 array from a rectangular list of numbers, or None: the general path."""

def plain_input(
    item: object,
) -> tuple[str, str, tuple[int, ...], np.ndarray, dict[str, object]] | None:
    """(name, datatype, shape, flat data, parameters) of a plain JSON input, or None."""

def plain_inputs(items: object, tensor: object, pd_json: str) -> list[Any] | None:
    """tensor(...) for every input of `items` in its plain form, or None."""


def ordered_feeds(
    tensors: object, order: tuple[tuple[str, str, int, tuple[int, ...]], ...],
    allow_nonfinite: bool,
) -> tuple[dict[str, np.ndarray], int] | None:
    """Feeds and rows of a batched model's in-order request, or None: the general check."""

def copy_record(
    layout: tuple[tuple[str, bytes | None, int, tuple[int, ...] | None, Any, Any], ...],
    inputs: dict[str, np.ndarray] | None,
    outputs: dict[str, np.ndarray],
    rows: int,
) -> int: ...

class Records:
    ids: list[Any]
    nbytes: int
    policy: Any
    sink: bool
    def __init__(
        self, layout: tuple[tuple[str, bytes | None, int, tuple[int, ...] | None, Any, Any], ...],
        inputs: bool, capacity: int, max_bytes: int,
    ) -> None: ...
    def __len__(self) -> int: ...
    def add(self, rid: Any, t: float, latency_s: float, inputs: dict[str, np.ndarray],
            outputs: dict[str, np.ndarray], rows: int) -> int: ...
    def times(self, start: int, end: int) -> list[float]: ...
    def latencies(self, start: int, end: int) -> list[float]: ...
    def ends(self, start: int, end: int) -> list[int]: ...
    def time(self, i: int) -> float: ...
    def end(self, i: int) -> int: ...
    def size(self, i: int) -> int: ...

class Tap:
    cores: dict[tuple[str, str, str], Records]
    pending: int
    held: int
    def __init__(self, log: Any, policies: dict[int, Any], off: Any, lock: Any, prefix: str,
                 max_records: int, max_bytes: int, random: Any) -> None: ...
    def new_id(self) -> str: ...
    def decide(self, cfg: Any, request_id: str | None, key: str | None) -> str | None: ...
    def capture(self, request_id: str, model: str, version: str, route: str, inputs: Any,
                outputs: Any, latency_s: float, cfg: Any, rows: int = -1) -> None: ...
    def flush(self) -> None: ...

def interleave(pieces: list[bytes | list[bytes] | tuple[bytes, bytes]], n: int) -> bytes: ...
def whole_numbers_json(a: Any) -> bytes | None: ...
