"""DataFrame models: an estimator fit on a pandas DataFrame becomes an ONNX model with one input
per column, checked against the estimator on the same DataFrame and profiled per column."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np

from serving.packaging.describe import make_manifest
from serving.registry.manifest import Manifest


class TabularError(ValueError):
    """The model or its data cannot be packaged: the message says why and the way out."""


def column_names(estimator: Any) -> list[str] | None:
    """The columns the estimator was fit on, when it was fit on a DataFrame with named columns."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is None or not all(isinstance(n, str) for n in names):
        return None
    return [str(n) for n in names]


def convert_columns(estimator: Any, df: Any, forced: str | None) -> tuple[bytes, list[Any], str]:
    """The first typing of the columns that converts and loads: ONNX bytes, the typing, a note
    when numbers had to be narrowed from their own dtypes."""
    import onnxruntime as ort

    from serving.packaging.convert import check_supported, to_onnx_columns
    from serving.packaging.frame import column_types

    check_supported(estimator)
    first_error: Exception | None = None
    tries = column_types(df, forced)
    for k, columns in enumerate(tries):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onnx_bytes = to_onnx_columns(estimator, columns).SerializeToString()
            ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        except Exception as exc:
            first_error = first_error or exc
            continue
        note = "" if k == 0 else (
            "the converters take no " + ("INT64" if k == 1 else "FP64/INT64") +
            " inputs for this model: those columns are served as FP32")
        return onnx_bytes, columns, note
    raise TabularError(
        f"cannot convert {type(estimator).__name__} to ONNX with skl2onnx: {first_error}")


def _labels(estimator: Any, given: tuple[str, ...]) -> tuple[str, ...]:
    from serving.packaging.convert import final_step

    if given:
        return given
    classes = getattr(final_step(estimator), "classes_", None)
    return tuple(str(c) for c in classes) if classes is not None else ()


def build_from_frame(
    name: str,
    estimator: Any,
    df: Any,
    *,
    datatype: str | None = None,
    atol: float = 1e-4,
    labels: tuple[str, ...] = (),
    source: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
    data_source: str = "",
) -> tuple[Manifest, bytes]:
    """Convert with one input per column, check parity against the estimator on `df` (as given),
    profile the columns; the manifest and the ONNX bytes."""
    from serving.packaging.convert import final_step, is_classifier
    from serving.packaging.frame import feeds, samples
    from serving.packaging.parity import check_parity_feeds
    from serving.packaging.profile import reference_profile_columns

    onnx_bytes, columns, note = convert_columns(estimator, df, datatype)
    fed = feeds(df, columns)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # feature-name chatter from the libraries
            parity = check_parity_feeds(estimator, onnx_bytes, fed, df, atol)
    except Exception as exc:
        raise TabularError(f"parity check could not run: {exc}") from None
    parity["data"] = data_source or "sample data"
    if note:
        parity["note"] = note
    last = final_step(estimator)
    manifest = make_manifest(
        name, onnx_bytes,
        reference=reference_profile_columns(onnx_bytes, fed),
        labels=_labels(estimator, labels),
        task="classification" if is_classifier(last) else "regression",
        parity=parity,
        samples=samples(fed),
        source={"estimator": type(estimator).__name__, "final_step": type(last).__name__,
                **(source or {})},
        metadata=metadata,
    )
    return replace(manifest, batching={"batchable": True}), onnx_bytes


def build_from_onnx_frame(
    name: str,
    onnx_bytes: bytes,
    df: Any | None,
    expected: np.ndarray | None,
    *,
    atol: float = 1e-4,
    labels: tuple[str, ...] = (),
    source: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
) -> tuple[Manifest, bytes]:
    """An ONNX file with named inputs: made batchable where sound, checked against `expected`
    outputs on `df` when both are given, profiled per column on `df`."""
    from serving.packaging.batchdim import make_batchable
    from serving.packaging.frame import samples
    from serving.packaging.parity import check_expected
    from serving.packaging.profile import reference_profile_columns

    fed = onnx_feeds(onnx_bytes, df) if df is not None else None
    onnx_bytes, batching = make_batchable(onnx_bytes, fed)
    parity: dict[str, Any] = {"checked": False, "reason": "ONNX input: no estimator to compare"}
    if fed is not None and expected is not None:
        parity = {**check_expected(onnx_bytes, fed, expected, atol), "data": "expected outputs"}
    manifest = make_manifest(
        name, onnx_bytes, labels=labels, task="classification" if labels else "",
        parity=parity, samples=samples(fed) if fed is not None else {}, source=source,
        metadata=metadata,
        reference=reference_profile_columns(onnx_bytes, fed) if fed is not None else {})
    return replace(manifest, batching=batching), onnx_bytes


def onnx_feeds(onnx_bytes: bytes, df: Any) -> dict[str, np.ndarray]:
    """`df`'s columns as the ONNX model's inputs, matched by name, in each input's dtype."""
    import onnxruntime as ort

    from serving.protocol.datatypes import from_onnx

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    out = {}
    for spec in sess.get_inputs():
        if spec.name not in df.columns:
            raise TabularError(f"sample data has no column {spec.name!r} for the model's input")
        datatype = from_onnx(spec.type)
        col = df[spec.name]
        if datatype == "BYTES":
            arr = np.array([str(v) for v in col.astype(object).where(col.notna(), "")], object)
        else:
            from serving.protocol.datatypes import NUMPY_DTYPES

            arr = np.asarray(col, dtype=NUMPY_DTYPES[datatype])
        rank = len(spec.shape or [0])
        out[spec.name] = arr.reshape(-1, 1) if rank == 2 else arr
    return out
