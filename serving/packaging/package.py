"""`serving package`: a scikit-learn estimator (or an ONNX file) -> a checked, published version.

The pickle is read here, on the user's machine, and never by the server.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from serving.packaging.describe import make_manifest
from serving.registry.layout import check_model_name

_FLOAT = {"FP32": np.float32, "FP64": np.float64}


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


def load_sample_data(path: Path, n_features: int | None) -> np.ndarray:
    """Rows of numbers from .npy or .csv (an optional header line is skipped)."""
    try:
        if path.suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        else:
            text = path.read_text().splitlines()
            skip = 1 if text and any(c.isalpha() for c in text[0]) else 0
            x = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)
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


def package(
    source: Path,
    name: str,
    registry: Path | str,
    *,
    sample_data: Path | None = None,
    datatype: str = "FP32",
    n_features: int | None = None,
    atol: float = 1e-4,
    allow_parity_failure: bool = False,
    metadata: dict[str, str] | None = None,
    labels: tuple[str, ...] | None = None,
    feature_names: list[str] | None = None,
) -> PackageResult:
    """Convert, check parity, and publish `source` as the next version of `name`."""
    from serving.packaging.publish import publish_version

    check_model_name(name)
    if datatype not in _FLOAT:
        raise PackageError(f"--datatype must be FP32 or FP64, not {datatype}")
    if not source.is_file():
        raise PackageError(f"no such file: {source}")
    raw = source.read_bytes()
    source_info = {"file": source.name, "sha256": hashlib.sha256(raw).hexdigest()}

    if source.suffix == ".onnx":
        onnx_bytes = raw
        try:
            manifest = make_manifest(name, onnx_bytes, source=source_info, metadata=metadata)
        except Exception as exc:
            raise PackageError(f"{source.name} is not a loadable ONNX model: {exc}") from None
        parity: dict[str, Any] = {"checked": False, "reason": "ONNX input: no estimator to compare"}
        if labels:
            manifest = replace(manifest, labels=labels, task="classification")
        manifest = replace(manifest, parity=parity)
    else:
        estimator = _load_estimator(source)
        width = _feature_count(estimator, n_features)
        if sample_data is not None:
            x = load_sample_data(sample_data, width)
            data_source = str(sample_data.name)
        else:
            x = generated_data(estimator, width)
            data_source = "generated"
        x = np.ascontiguousarray(x, dtype=_FLOAT[datatype])
        onnx_bytes = _convert(estimator, width, datatype)
        from serving.packaging.convert import is_classifier
        from serving.packaging.parity import check_parity

        try:
            parity = check_parity(estimator, onnx_bytes, x, "input", atol=atol)
        except Exception as exc:
            raise PackageError(f"parity check could not run: {exc}") from None
        parity["data"] = data_source
        classes = getattr(estimator, "classes_", None)
        found_labels = tuple(str(c) for c in classes) if classes is not None else ()
        names = feature_names or [str(f) for f in getattr(estimator, "feature_names_in_", [])]
        from serving.packaging.examples import reference_profile

        try:
            reference = reference_profile(onnx_bytes, x, names or None)
        except ValueError as exc:
            raise PackageError(f"--feature-names: {exc}") from None
        manifest = make_manifest(
            name,
            onnx_bytes,
            reference=reference,
            labels=labels or found_labels,
            task="classification" if is_classifier(estimator) else "regression",
            parity=parity,
            samples={"input": x[:3].tolist()},
            source={**source_info, "estimator": type(estimator).__name__},
            metadata=metadata,
        )
    if parity.get("checked", True) and not parity.get("passed", False):
        if not allow_parity_failure:
            return PackageResult(name, None, parity, published=False)
        parity["override"] = True
        manifest = replace(manifest, parity=parity)
    from serving.packaging.examples import MODEL_TOML

    model_toml = MODEL_TOML.format(max_batch_size=64)
    version = publish_version(registry, manifest, onnx_bytes, model_toml=model_toml)
    return PackageResult(
        name, version, parity, True,
        [t.to_json() for t in manifest.inputs], [t.to_json() for t in manifest.outputs],
    )


def _load_estimator(path: Path) -> Any:
    try:
        import joblib

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # version-mismatch chatter; parity decides
            estimator = joblib.load(path)
    except Exception as exc:
        raise PackageError(f"cannot read {path.name} as a joblib/pickle file: {exc}") from None
    if not hasattr(estimator, "predict"):
        raise PackageError(f"{path.name} holds a {type(estimator).__name__}, not an estimator")
    return estimator


def _convert(estimator: Any, n_features: int, datatype: str) -> bytes:
    from serving.packaging.convert import to_onnx

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return to_onnx(estimator, n_features, datatype).SerializeToString()  # type: ignore[no-any-return]
    except Exception as exc:
        raise PackageError(
            f"cannot convert {type(estimator).__name__} to ONNX with skl2onnx: {exc}"
        ) from None
