"""Tabular sample data: a pandas DataFrame read from CSV, Parquet or a structured `.npy`, its
columns typed for ONNX (FP32 / FP64 / INT64 / BYTES), the per-column feeds, and generated rows
when no data is given.

pandas (and pyarrow for Parquet) come with the `packaging` extra; the server never imports this.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

FRAME_FORMATS = (".csv", ".parquet", ".pq", ".npy")
Columns = list[tuple[str, str]]  # (column, datatype) in the model's input order


class FrameError(ValueError):
    """Sample data that cannot be read as a table with named columns."""


def read_frame(path: Path, names: Sequence[str]) -> Any:
    """The sample table of `path`, with the columns `names` (the model's) in that order.

    CSV: a header row, each column typed by its values (numbers stay numbers, text stays text).
    Parquet: as written. `.npy`: a structured (record) array, whose field names are the columns,
    or a plain 2-D numeric array taken in the model's column order; object arrays are refused
    (loading them runs pickle).
    """
    import pandas as pd

    if path.suffix not in FRAME_FORMATS:
        raise FrameError(f"cannot read sample data {path.name}: use .csv (with a header row), "
                         ".parquet or .npy (a structured array)")
    try:
        if path.suffix == ".csv":
            df = pd.read_csv(path, keep_default_na=True)
        elif path.suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = _read_npy(path, names)
    except FrameError:
        raise
    except (OSError, ValueError, ImportError) as exc:
        raise FrameError(f"cannot read sample data {path.name}: {exc}") from None
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise FrameError(f"sample data {path.name} lacks the model's column(s) "
                         f"{', '.join(map(repr, missing[:5]))} (it has "
                         f"{', '.join(map(repr, list(df.columns)[:8]))})")
    if len(df) == 0:
        raise FrameError("sample data has no rows")
    return df[list(names)]


def _read_npy(path: Path, names: Sequence[str]) -> Any:
    import pandas as pd

    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
        raise FrameError(
            f"{path.name} holds an object array, which numpy can only load by running pickle: "
            "save a structured array instead (np.save with a record dtype, e.g. "
            "df.to_records(index=False) with text columns as fixed-width 'U' strings), "
            "or use CSV or Parquet") from None
    if arr.dtype.names:
        return pd.DataFrame({n: _plain(arr[n]) for n in arr.dtype.names})
    if arr.ndim == 2 and arr.dtype.kind in "iuf" and arr.shape[1] == len(names):
        return pd.DataFrame(arr, columns=list(names))
    raise FrameError(f"{path.name}: a {arr.dtype} array of shape {arr.shape} has no column names; "
                     f"save a structured array or a 2-D number table of {len(names)} columns")


def _plain(col: np.ndarray) -> np.ndarray:
    return col.astype(object) if col.dtype.kind in "US" else col


def is_text(col: Any) -> bool:
    """Strings or categories: an ONNX string (BYTES) input."""
    kind = getattr(col.dtype, "kind", "O")
    return kind in "OUS" or str(col.dtype) in ("category", "string")


def column_types(df: Any, forced: str | None) -> list[Columns]:
    """Typings to try, best first: the columns' own dtypes, then integers as floats, then every
    number FP32 (converters that take only floats). `forced` (FP32/FP64) types float columns."""
    keep: Columns = []
    ints_float: Columns = []
    all_fp32: Columns = []
    for name in df.columns:
        col = df[name]
        if is_text(col):
            kinds = ("BYTES", "BYTES", "BYTES")
        elif col.dtype.kind in "iu":
            kinds = ("INT64", forced or "FP32", "FP32")
        else:
            own = forced or ("FP32" if col.dtype == np.float32 else "FP64")
            kinds = (own, own, "FP32")
        for out, kind in zip((keep, ints_float, all_fp32), kinds, strict=True):
            out.append((str(name), kind))
    tries: list[Columns] = []
    for t in (keep, ints_float, all_fp32):
        if t not in tries:
            tries.append(t)
    return tries


def feeds(df: Any, columns: Columns) -> dict[str, np.ndarray]:
    """One [-1, 1] array per column in its ONNX dtype (missing text becomes "")."""
    dtypes = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64}
    out = {}
    for name, kind in columns:
        col = df[name]
        if kind == "BYTES":
            values = col.astype(object).where(col.notna(), "")
            arr = np.array([str(v) for v in values], dtype=object)
        else:
            arr = np.asarray(col, dtype=dtypes[kind])
        out[name] = arr.reshape(-1, 1)
    return out


def samples(fed: dict[str, np.ndarray], rows: int = 3) -> dict[str, list[Any]]:
    """The first rows of each input, as the manifest keeps them (warm-up and docs)."""
    return {name: arr[:rows].tolist() for name, arr in fed.items()}


# ---- generated rows ----------------------------------------------------------------------------


def _column_lists(estimator: Any, names: Sequence[str]) -> list[tuple[Any, list[str]]]:
    """(transformer, its columns by name) for each ColumnTransformer branch, or the first step
    of a Pipeline for every column."""
    from serving.packaging.convert import walk

    for _path, step in walk(estimator):
        if hasattr(step, "transformers_"):
            out = []
            for _n, trans, cols in step.transformers_:
                if isinstance(trans, str):
                    continue
                picked = [names[int(c)] if isinstance(c, (int, np.integer)) else str(c)
                          for c in (cols if isinstance(cols, (list, tuple, np.ndarray)) else [])]
                out.append((trans, picked))
            return out
    first = estimator.steps[0][1] if hasattr(estimator, "steps") else estimator
    return [(first, list(names))]


def _hint(step: Any, i: int) -> tuple[str, Any] | None:
    """What a fitted step records about its i-th input column."""
    if hasattr(step, "categories_") and i < len(step.categories_):
        cats = [c for c in step.categories_[i] if c == c and c is not None]  # drop NaN
        return ("choice", cats) if cats else None
    if hasattr(step, "data_min_"):
        return "uniform", (float(step.data_min_[i]), float(step.data_max_[i]))
    if getattr(step, "mean_", None) is not None and getattr(step, "scale_", None) is not None:
        return "normal", (float(step.mean_[i]), float(step.scale_[i]))
    if hasattr(step, "center_") and getattr(step, "scale_", None) is not None:
        return "normal", (float(step.center_[i]), float(step.scale_[i]))
    stats = getattr(step, "statistics_", None)
    if stats is not None and i < len(stats):
        value = stats[i]
        return ("choice", [value]) if isinstance(value, str) else ("normal", (float(value), 1.0))
    return None


def column_hints(estimator: Any, names: Sequence[str]) -> dict[str, tuple[str, Any]]:
    """Per column, how to draw it: categories from encoders, ranges / means from scalers."""
    hints: dict[str, tuple[str, Any]] = {}
    for trans, cols in _column_lists(estimator, names):
        steps = [s for _, s in trans.steps] if hasattr(trans, "steps") else [trans]
        # steps after an encoder see its encoded columns, not this column
        ends = [k for k, s in enumerate(steps) if hasattr(s, "categories_")]
        steps = steps[: ends[0] + 1] if ends else steps
        for i, col in enumerate(cols):
            found = [h for h in (_hint(s, i) for s in steps) if h is not None]
            choices = [h for h in found if h[0] == "choice"]
            ranges = [h for h in found if h[0] == "uniform"]
            if choices:  # an encoder's categories beat an imputer's fill value
                hints[col] = max(choices, key=lambda h: len(h[1]))
            elif ranges or found:  # a scaler's record beats the imputer's before it
                hints[col] = (ranges or found)[-1]
    return hints


def generated_frame(
    estimator: Any, names: Sequence[str], rows: int = 256, dtypes: dict[str, str] | None = None
) -> tuple[Any, str]:
    """Rows drawn per column from what the model records, and a sentence saying how; `dtypes`
    (an MLflow signature's) types the numeric columns."""
    import pandas as pd

    rng = np.random.default_rng(0)
    hints = column_hints(estimator, names)
    data: dict[str, Any] = {}
    for name in names:
        kind, arg = hints.get(name, ("normal", (0.0, 1.0)))
        if kind == "choice":
            values = np.asarray(arg)
            picked = values[rng.integers(0, len(values), rows)]
            data[name] = picked.astype(object) if values.dtype.kind in "OUS" else picked
        elif kind == "uniform":
            data[name] = rng.uniform(arg[0], arg[1], rows).astype(np.float32)
        else:
            data[name] = rng.normal(arg[0], arg[1] or 1.0, rows).astype(np.float32)
    for name, dtype in (dtypes or {}).items():
        if name in data and dtype != "object" and np.asarray(data[name]).dtype.kind in "iuf":
            col = np.asarray(data[name])
            data[name] = np.round(col).astype(dtype) if dtype == "int64" else col.astype(dtype)
    known = sum(1 for n in names if n in hints)
    how = (f"generated per column from what the model records ({known} of {len(names)} columns "
           "from its encoders' categories and scalers' ranges, the rest standard normal)")
    return pd.DataFrame(data), how
