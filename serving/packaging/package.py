"""The packaging pipeline: a scikit-learn estimator (or an ONNX file) -> a checked version.

One pipeline serves `serving package`, the example models and the deliberately worse example:
`build_from_estimator` (an array model: convert, check parity, profile, describe),
`tabular.build_from_frame` (a DataFrame model: one input per column), or `build_from_onnx` /
`tabular.build_from_onnx_frame` (describe, make batchable, check given outputs, profile), then
`publish`. `sources.read_source` reads the model (a pickle, an .onnx file, an MLflow model) here,
on the user's machine; the server never does.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from serving.packaging.describe import check_labels, make_manifest
from serving.registry.layout import check_model_name
from serving.registry.manifest import Manifest

_FLOAT = {"FP32": np.float32, "FP64": np.float64}
SAMPLE_FORMATS = (".npy", ".csv")

MODEL_TOML = """\
# Serving configuration for this model (README: "Registry layout and model configuration").
[batching]
enabled = true
max_batch_size = {max_batch_size}
max_queue_delay_us = 0        # 0: batches form from what queued while the worker was busy
max_queue_size = 1024
default_timeout_us = 0        # 0: no deadline
workers = 1
inline_max_us = 250           # batches measured cheaper than this run on the event loop

[versions]
policy = "latest"             # latest | all | specific
latest = 1

[runtime]
inter_op_threads = 1
graph_optimization_level = "all"

[routing]
auto_promote = true           # false: new versions wait for a rollout (serving rollout start)
"""


class PackageError(Exception):
    """Packaging refused: the message says why; nothing was written to the registry."""


@dataclass
class PackageResult:
    name: str
    version: int | None
    parity: dict[str, Any]
    published: bool
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the CLI prints besides parity


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> np.ndarray:
    """A CSV table of numbers; its first line is a header when some field is not a number."""
    lines = path.read_text().splitlines()
    header = bool(lines) and not all(_is_number(f) for f in lines[0].split(","))
    return np.loadtxt(path, delimiter=",", skiprows=int(header), ndmin=2)


def load_sample_data(path: Path, n_features: int | None) -> np.ndarray:
    """Rows of numbers from .npy or .csv (a header line is skipped)."""
    if path.suffix not in SAMPLE_FORMATS:
        raise PackageError(
            f"cannot read sample data {path.name}: use a .npy file (numpy.save) or a .csv "
            "table of numbers (an optional header line)"
        )
    try:
        x = np.load(path, allow_pickle=False) if path.suffix == ".npy" else _read_csv(path)
    except (OSError, ValueError) as exc:
        raise PackageError(f"cannot read sample data {path}: {exc}") from None
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype.kind not in "iuf":
        raise PackageError(f"sample data must be a 2-D table of numbers, got {x.shape} {x.dtype}")
    if n_features is not None and x.shape[1] != n_features:
        raise PackageError(
            f"sample data has {x.shape[1]} columns but the model takes {n_features} features"
        )
    if len(x) == 0:
        raise PackageError("sample data has no rows")
    return x


def _feature_count(estimator: Any, given: int | None) -> int:
    n = getattr(estimator, "n_features_in_", None)
    if n is None and hasattr(estimator, "steps"):
        n = getattr(estimator.steps[0][1], "n_features_in_", None)
    if given is not None:
        if n is not None and int(n) != given:
            raise PackageError(f"--n-features {given} but the estimator was fit on {n} features")
        return given
    if n is None:
        raise PackageError("cannot tell the number of features: pass --n-features")
    return int(n)


def generated_data(estimator: Any, n_features: int, rows: int = 256) -> np.ndarray:
    """Rows within the training ranges when the estimator records them, else standard normal."""
    rng = np.random.default_rng(0)
    steps = [s for _, s in getattr(estimator, "steps", [])] or [estimator]
    first = steps[0]
    if hasattr(first, "data_min_") and hasattr(first, "data_max_"):
        return rng.uniform(first.data_min_, first.data_max_, size=(rows, n_features))
    if hasattr(first, "mean_") and hasattr(first, "scale_") and first.scale_ is not None:
        return rng.normal(first.mean_, first.scale_, size=(rows, n_features))
    return rng.normal(size=(rows, n_features))


def _profile(onnx_bytes: bytes, x: np.ndarray, feature_names: list[str] | None) -> dict[str, Any]:
    from serving.packaging.profile import reference_profile

    try:
        return reference_profile(onnx_bytes, x, feature_names)
    except ValueError as exc:
        raise PackageError(f"reference profile: {exc}") from None


def build_from_estimator(
    name: str,
    estimator: Any,
    x: np.ndarray,
    *,
    datatype: str = "FP32",
    atol: float = 1e-4,
    labels: tuple[str, ...] = (),
    feature_names: list[str] | None = None,
    source: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
    data_source: str = "",
) -> tuple[Manifest, bytes]:
    """Convert `estimator`, check parity and profile it on rows `x`: its manifest and ONNX."""
    from serving.packaging.convert import is_classifier
    from serving.packaging.parity import check_parity

    x = np.ascontiguousarray(x, dtype=_FLOAT[datatype])
    onnx_bytes = _convert(estimator, x.shape[1], datatype)
    try:
        parity = check_parity(estimator, onnx_bytes, x, "input", atol=atol)
    except Exception as exc:
        raise PackageError(f"parity check could not run: {exc}") from None
    if data_source:
        parity["data"] = data_source
    classes = getattr(estimator, "classes_", None)
    names = feature_names or [str(f) for f in getattr(estimator, "feature_names_in_", [])]
    manifest = make_manifest(
        name,
        onnx_bytes,
        reference=_profile(onnx_bytes, x, names or None),
        labels=labels or (tuple(str(c) for c in classes) if classes is not None else ()),
        task="classification" if is_classifier(estimator) else "regression",
        parity=parity,
        samples={"input": x[:3].tolist()},
        source={"estimator": type(estimator).__name__, **(source or {})},
        metadata=metadata,
    )
    return manifest, onnx_bytes


def build_from_onnx(
    name: str,
    onnx_bytes: bytes,
    x: np.ndarray | None = None,
    *,
    labels: tuple[str, ...] = (),
    feature_names: list[str] | None = None,
    source: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
    expected: np.ndarray | None = None,
    atol: float = 1e-4,
) -> tuple[Manifest, bytes]:
    """Describe an existing ONNX model, made batchable where sound; parity against `expected`
    outputs on `x` when both are given (else unchecked: no estimator); profile it on `x`."""
    from serving.packaging.batchdim import make_batchable
    from serving.packaging.parity import check_expected

    try:
        manifest = make_manifest(name, onnx_bytes, source=source, metadata=metadata)
        feeds = None
        if x is not None and len(manifest.inputs) == 1:
            spec = manifest.inputs[0]
            feeds = {spec.name: np.ascontiguousarray(x, _FLOAT.get(spec.datatype, np.float32))}
        onnx_bytes, batching = make_batchable(onnx_bytes, feeds)
        manifest = make_manifest(name, onnx_bytes, source=source, metadata=metadata)
    except Exception as exc:
        raise PackageError(f"not a loadable ONNX model: {exc}") from None
    parity: dict[str, Any] = {"checked": False, "reason": "ONNX input: no estimator to compare"}
    if feeds is not None and expected is not None:
        try:
            parity = {**check_expected(onnx_bytes, feeds, expected, atol),
                      "data": "expected outputs"}
        except Exception as exc:
            raise PackageError(f"checking the expected outputs: {exc}") from None
    manifest = replace(manifest, parity=parity, batching=batching)
    if labels:
        manifest = replace(manifest, labels=labels, task="classification")
    if x is not None:
        manifest = replace(manifest, reference=_profile(onnx_bytes, x, feature_names))
    return manifest, onnx_bytes


def publish(
    registry: Path | str, manifest: Manifest, onnx_bytes: bytes, max_batch_size: int = 64
) -> int:
    """Publish as the model's next version (a default `model.toml` if it has none yet)."""
    from serving.packaging.publish import publish_version

    toml = MODEL_TOML.format(max_batch_size=max_batch_size)
    return publish_version(registry, manifest, onnx_bytes, model_toml=toml)


def package(
    source: Path | str,
    name: str,
    registry: Path | str,
    *,
    sample_data: Path | None = None,
    datatype: str | None = None,
    n_features: int | None = None,
    atol: float = 1e-4,
    allow_parity_failure: bool = False,
    metadata: dict[str, str] | None = None,
    labels: tuple[str, ...] | None = None,
    feature_names: list[str] | None = None,
    expected_outputs: Path | None = None,
    tracking_uri: str | None = None,
) -> PackageResult:
    """Convert, check parity, and publish `source` (an estimator or ONNX file, an MLflow model
    directory or `runs:/` / `models:/` URI) as the next version of `name`."""
    from serving.packaging.sources import SourceError, read_source

    check_model_name(name)
    if datatype is not None and datatype not in _FLOAT:
        raise PackageError(f"--datatype must be FP32 or FP64, not {datatype}")
    try:
        src = read_source(str(source), tracking_uri)
    except SourceError as exc:
        raise PackageError(str(exc)) from None
    if expected_outputs is not None and (src.raw is None or sample_data is None):
        raise PackageError("--expected-outputs goes with an .onnx file and its --sample-data")
    notes: list[str] = []
    opts = _Options(sample_data, datatype, atol, labels or (), feature_names, src.info,
                    metadata, notes, src.example, src.dtypes)
    if src.raw is not None:
        manifest, onnx_bytes = _package_onnx(name, src.raw, opts, expected_outputs)
    else:
        manifest, onnx_bytes = _package_estimator(name, src.estimator, n_features, opts)
    try:
        check_labels(manifest, opts.labels)
    except ValueError as exc:
        raise PackageError(str(exc)) from None
    parity = dict(manifest.parity)
    if not manifest.batching.get("batchable", True):
        notes.append(f"warning: batching will be off for this model: "
                     f"{manifest.batching['reason']}")
    if parity.get("checked", True) and not parity.get("passed", False):
        if not allow_parity_failure:
            return PackageResult(name, None, parity, published=False, notes=notes)
        parity["override"] = True
        manifest = replace(manifest, parity=parity)
    version = publish(registry, manifest, onnx_bytes)
    return PackageResult(
        name, version, parity, True,
        [t.to_json() for t in manifest.inputs], [t.to_json() for t in manifest.outputs], notes,
    )


@dataclass
class _Options:
    sample_data: Path | None
    datatype: str | None
    atol: float
    labels: tuple[str, ...]
    feature_names: list[str] | None
    source: dict[str, Any]
    metadata: dict[str, str] | None
    notes: list[str]
    example: Any = None  # MLflow's input example: the sample data when none is given
    dtypes: dict[str, str] = field(default_factory=dict)  # MLflow signature's column dtypes


def _package_estimator(
    name: str, estimator: Any, n_features: int | None, o: _Options
) -> tuple[Manifest, bytes]:
    from serving.packaging.tabular import column_names

    columns = column_names(estimator)
    if columns is not None:
        return _package_frame(name, estimator, columns, o)
    width = _feature_count(estimator, n_features)
    if o.sample_data is not None:
        x, data_source = load_sample_data(o.sample_data, width), o.sample_data.name
    elif o.example is not None and np.asarray(o.example).ndim == 2:
        x, data_source = np.asarray(o.example, np.float64), "MLflow input example"
    else:
        x, data_source = generated_data(estimator, width), "generated"
    return build_from_estimator(
        name, estimator, x, datatype=o.datatype or "FP32", atol=o.atol, labels=o.labels,
        feature_names=o.feature_names, source=o.source, metadata=o.metadata,
        data_source=data_source)


def _package_frame(
    name: str, estimator: Any, columns: list[str], o: _Options
) -> tuple[Manifest, bytes]:
    from serving.packaging.convert import UnsupportedModel
    from serving.packaging.frame import FrameError, generated_frame, read_frame
    from serving.packaging.tabular import TabularError, build_from_frame

    try:
        if o.sample_data is not None:
            df, data_source = read_frame(o.sample_data, columns), o.sample_data.name
        elif _is_frame(o.example, columns):
            df, data_source = o.example[columns], "MLflow input example"
        else:
            df, how = generated_frame(estimator, columns, dtypes=o.dtypes)
            data_source = "generated"
            o.notes.append(f"no --sample-data: {len(df)} rows {how}")
        manifest, onnx_bytes = build_from_frame(
            name, estimator, df, datatype=o.datatype, atol=o.atol, labels=o.labels,
            source=o.source, metadata=o.metadata, data_source=data_source)
    except (FrameError, TabularError, UnsupportedModel) as exc:
        raise PackageError(str(exc)) from None
    if "note" in manifest.parity:
        o.notes.append(f"note: {manifest.parity['note']}")
    return manifest, onnx_bytes


def _package_onnx(
    name: str, raw: bytes, o: _Options, expected_outputs: Path | None
) -> tuple[Manifest, bytes]:
    from serving.packaging.frame import FrameError, read_frame
    from serving.packaging.parity import load_expected
    from serving.packaging.tabular import TabularError, build_from_onnx_frame

    try:
        expected = load_expected(expected_outputs) if expected_outputs is not None else None
    except ValueError as exc:
        raise PackageError(str(exc)) from None
    try:
        inputs = make_manifest(name, raw).inputs
    except Exception as exc:
        raise PackageError(f"{name}: not a loadable ONNX model: {exc}") from None
    matrix = len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].shape[1] != 1
    try:
        if matrix:
            x = load_sample_data(o.sample_data, None) if o.sample_data is not None else (
                np.asarray(o.example, np.float64) if o.example is not None else None)
            return build_from_onnx(
                name, raw, x, labels=o.labels, feature_names=o.feature_names, source=o.source,
                metadata=o.metadata, expected=expected, atol=o.atol)
        names = [t.name for t in inputs]
        df = read_frame(o.sample_data, names) if o.sample_data is not None else (
            o.example[names] if _is_frame(o.example, names) else None)
        return build_from_onnx_frame(name, raw, df, expected, atol=o.atol, labels=o.labels,
                                     source=o.source, metadata=o.metadata)
    except (PackageError, FrameError, TabularError) as exc:
        raise PackageError(f"{o.source['file']}: {exc}") from None


def _is_frame(example: Any, columns: list[str]) -> bool:
    return hasattr(example, "columns") and all(c in example.columns for c in columns)


def _convert(estimator: Any, n_features: int, datatype: str) -> bytes:
    from serving.packaging.convert import UnsupportedModel, check_supported, to_onnx

    try:
        check_supported(estimator)
    except UnsupportedModel as exc:
        raise PackageError(str(exc)) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return to_onnx(estimator, n_features, datatype).SerializeToString()  # type: ignore[no-any-return]
    except Exception as exc:
        raise PackageError(
            f"cannot convert {type(estimator).__name__} to ONNX with skl2onnx: {exc}"
        ) from None
