"""What `serving package` reads: a joblib/pickle estimator, an `.onnx` file, or an MLflow model
(a directory with an `MLmodel` file, or a `runs:/<run>/<path>` / `models:/<name>/<version>` URI
resolved with a tracking URI: a local file store or SQLite works without a server).

Everything is read into memory here, on the user's machine; the server never loads any of it.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MLFLOW_SCHEMES = ("runs:/", "models:/")
MLFLOW_FLAVORS = ("onnx", "sklearn", "xgboost", "lightgbm")  # in this order of preference
# MLflow's column types -> the dtype a generated column gets
_MLFLOW_DTYPES = {"double": "float64", "float": "float32", "long": "int64", "integer": "int64",
                  "string": "object", "boolean": "bool"}


class SourceError(ValueError):
    """The model source cannot be read: the message says why."""


@dataclass
class Source:
    """A model to package: ONNX bytes or an estimator, with what came along with it."""

    raw: bytes | None = None  # an ONNX model
    estimator: Any = None  # else an estimator (with `predict`)
    info: dict[str, Any] = field(default_factory=dict)  # provenance for the manifest
    example: Any = None  # MLflow's input example (a DataFrame or an array)
    dtypes: dict[str, str] = field(default_factory=dict)  # MLflow signature: column -> dtype


def is_mlflow(source: str) -> bool:
    """A `runs:/` or `models:/` URI, or a directory holding an `MLmodel` file."""
    return source.startswith(MLFLOW_SCHEMES) or (Path(source) / "MLmodel").is_file()


def read_source(source: str, tracking_uri: str | None = None) -> Source:
    """The model named by `source` (a file path, an MLflow directory or URI)."""
    if is_mlflow(source):
        return _read_mlflow(source, tracking_uri)
    path = Path(source)
    if not path.is_file():
        raise SourceError(f"no such file: {path}")
    raw = path.read_bytes()
    info = {"file": path.name, "sha256": hashlib.sha256(raw).hexdigest()}
    if path.suffix == ".onnx":
        return Source(raw=raw, info=info)
    return Source(estimator=load_estimator(path), info=info)


def load_estimator(path: Path) -> Any:
    """A joblib/pickle file's estimator (trusted input: unpickling runs its code)."""
    try:
        import joblib

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # version-mismatch chatter; parity decides
            estimator = joblib.load(path)
    except Exception as exc:
        raise SourceError(f"cannot read {path.name} as a joblib/pickle file: {exc}") from None
    if not hasattr(estimator, "predict"):
        raise SourceError(f"{path.name} holds a {type(estimator).__name__}, not an estimator")
    return estimator


def _read_mlflow(source: str, tracking_uri: str | None) -> Source:
    try:
        import mlflow
    except ImportError:
        raise SourceError(
            f"{source} is an MLflow model: install the mlflow extra "
            "(pip install 'serving[mlflow]')") from None
    if not source.startswith(MLFLOW_SCHEMES):
        return _read_mlflow_dir(Path(source), source, None)
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    tmp = tempfile.mkdtemp(prefix="serving-mlflow-")
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp)
                run_id = _run_id(mlflow, source)
        except Exception as exc:
            where = f" (tracking URI {mlflow.get_tracking_uri()})"
            raise SourceError(f"cannot fetch {source}{where}: {exc}") from None
        return _read_mlflow_dir(Path(local), source, run_id)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_id(mlflow: Any, uri: str) -> str | None:
    if uri.startswith("runs:/"):
        return uri[len("runs:/"):].split("/", 1)[0] or None
    name, _, version = uri[len("models:/"):].partition("/")
    client = mlflow.MlflowClient()
    if version.isdigit():
        return client.get_model_version(name, version).run_id  # type: ignore[no-any-return]
    return None  # an alias or stage: the MLmodel's run id, if it records one


def _read_mlflow_dir(path: Path, uri: str, run_id: str | None) -> Source:
    import mlflow
    from mlflow.models import Model

    try:
        model = Model.load(str(path))
    except Exception as exc:
        raise SourceError(f"cannot read the MLmodel of {uri}: {exc}") from None
    flavor = next((f for f in MLFLOW_FLAVORS if f in model.flavors), None)
    if flavor is None:
        raise SourceError(
            f"MLflow model {uri} has the flavour(s) {', '.join(sorted(model.flavors))}; "
            f"serving package takes {', '.join(MLFLOW_FLAVORS)}")
    info: dict[str, Any] = {"mlflow": {
        "model_uri": uri, "run_id": run_id or model.run_id, "flavor": flavor,
        "mlflow_version": model.mlflow_version, "packaged_with_mlflow": mlflow.__version__}}
    src = Source(info=info, dtypes=_signature_dtypes(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if flavor == "onnx":
                data = model.flavors["onnx"].get("data", "model.onnx")
                src.raw = (path / data).read_bytes()
                info["sha256"] = hashlib.sha256(src.raw).hexdigest()
            else:
                src.estimator = getattr(mlflow, flavor).load_model(str(path))
            src.example = model.load_input_example(str(path))
        except Exception as exc:
            raise SourceError(f"cannot load the {flavor} model of {uri}: {exc}") from None
    return src


def _signature_dtypes(model: Any) -> dict[str, str]:
    """Column name -> dtype from an MLflow column signature (empty for a tensor signature)."""
    sig = model.signature
    if sig is None or sig.inputs is None or not sig.inputs.has_input_names():
        return {}
    out = {}
    for spec in sig.inputs.inputs:
        kind = getattr(getattr(spec, "type", None), "name", None)
        if spec.name is not None and kind in _MLFLOW_DTYPES:
            out[str(spec.name)] = _MLFLOW_DTYPES[kind]
    return out
