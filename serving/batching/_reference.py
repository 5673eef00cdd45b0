"""Pure-numpy twins of the row kernels in `ext/_rows.pxi`: slow, obvious, and the spec."""

from __future__ import annotations

import operator

import numpy as np


def _is_rows(arr: object, writable: bool = False) -> bool:
    """Whether `arr` is what the kernels copy: a 2-D C-contiguous uint8 ndarray."""
    return (
        isinstance(arr, np.ndarray)
        and arr.dtype == np.uint8
        and arr.ndim == 2
        and arr.flags.c_contiguous
        and (arr.flags.writeable or not writable)
    )


def gather_rows(parts: list[np.ndarray], out: np.ndarray) -> int:
    """Copy each part's rows into `out` back to back; return the rows written."""
    if not _is_rows(out, writable=True):
        raise ValueError("out is not a writable 2-D C-contiguous uint8 array")
    row, width = 0, out.shape[1]
    for i, part in enumerate(parts):
        if not _is_rows(part):
            raise ValueError(f"part {i} is not a 2-D C-contiguous uint8 array")
        n = part.shape[0]
        if part.shape[1] != width or row + n > out.shape[0]:
            raise ValueError(f"part {part.shape[0]}x{part.shape[1]} does not fit at row {row}")
        out[row : row + n] = part
        row += n
    return row


def scatter_rows(src: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Split `src` along axis 0 into consecutive views of counts[i] rows each."""
    total = 0
    for i, count in enumerate(counts):
        n = operator.index(count)
        if n < 0:
            raise ValueError(f"count {n} at index {i} is negative")
        total += n
    if total > len(src):
        raise ValueError(f"counts sum to {total} but src has {len(src)} rows")
    pieces, row = [], 0
    for n in counts:
        pieces.append(src[row : row + n])
        row += n
    return pieces
