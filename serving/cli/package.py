"""`serving examples` and `serving package`: models into a registry."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parsers(sub: Any) -> None:
    """The `examples` and `package` commands."""
    ex = sub.add_parser(
        "examples",
        help="build the example models (scikit-learn bundled datasets) into a registry",
        description=(
            "Train the example models with fixed seeds on scikit-learn's bundled datasets, "
            "convert them to ONNX, check parity and publish them (iris, forest, digits, diabetes, "
            "and tabular: a DataFrame pipeline with numeric and string columns)."
        ),
    )
    ex.add_argument("--registry", default="models",
                    help="registry directory or s3://bucket/prefix (default: models)")
    ex.add_argument(
        "--force", action="store_true", help="publish new versions even if the models exist"
    )
    ex.add_argument(
        "--worse", metavar="MODEL", choices=["iris"],
        help="publish a deliberately worse new version of MODEL (to watch a rollout fail)",
    )
    ex.set_defaults(run=run_examples)
    pk = sub.add_parser(
        "package",
        help="convert a scikit-learn model (or an .onnx file) into a new registry version",
        description=(
            "Convert a scikit-learn estimator or Pipeline (joblib/pickle: trusted input, read "
            "only here) with skl2onnx, XGBoost / LightGBM / CatBoost models included, or take "
            "an existing .onnx file; check parity against the estimator on --sample-data (or "
            "generated rows); publish it atomically as the model's next version. An estimator "
            "fit on a pandas DataFrame gets one input per column, named after it. A model that "
            "fails parity is not published."
        ),
    )
    pk.add_argument("model_file",
                    help="a .joblib/.pkl estimator, an .onnx file, or an MLflow model: a "
                         "directory with an MLmodel file, runs:/<run>/<path> or "
                         "models:/<name>/<version>")
    pk.add_argument("--tracking-uri", metavar="URI",
                    help="MLflow tracking URI for runs:/ and models:/ (e.g. sqlite:///mlflow.db "
                         "or a local mlruns folder; default: MLflow's own, MLFLOW_TRACKING_URI)")
    pk.add_argument("--name", required=True, help="model name in the registry")
    pk.add_argument("--registry", default="models",
                    help="registry directory or s3://bucket/prefix (default: models)")
    pk.add_argument("--sample-data",
                    help="rows for the parity check and the drift reference: .csv (a header "
                         "row names the columns), .parquet, or .npy (a structured array, or a "
                         "2-D number table)")
    pk.add_argument("--expected-outputs", metavar="FILE",
                    help="with an .onnx file and --sample-data: the outputs the model must give "
                         "on those rows (.npy or .csv: labels, values or probabilities)")
    pk.add_argument("--labels", metavar="A,B,...",
                    help="class names for classes 0, 1, ... (default: the estimator's classes_)")
    pk.add_argument("--datatype", choices=["FP32", "FP64"],
                    help="datatype of float inputs (default: FP32 for an array model; a "
                         "DataFrame model keeps each column's dtype where the converters allow)")
    pk.add_argument("--n-features", type=int, help="input width, if the estimator can't tell")
    pk.add_argument("--tolerance", type=float, default=1e-4,
                    help="max abs difference of probabilities/values (default: 1e-4)")
    pk.add_argument("--feature-names", metavar="A,B,...",
                    help="feature names for drift reports (default: the estimator's, else f0..)")
    pk.add_argument("--allow-parity-failure", action="store_true",
                    help="publish even if parity fails (recorded in the manifest)")
    pk.add_argument("--meta", action="append", metavar="KEY=VALUE",
                    help="user metadata for the manifest (repeatable)")
    pk.set_defaults(run=run_package)


def run_examples(args: argparse.Namespace) -> int:
    """`serving examples`."""
    from serving.registry.s3 import S3RegistryError

    try:
        return _build_examples(args)
    except S3RegistryError as exc:
        print(f"serving examples: {exc}", file=sys.stderr)
        return 1


def _build_examples(args: argparse.Namespace) -> int:
    from serving.packaging.examples import build_examples

    if args.worse:
        from serving.packaging.examples import publish_worse

        version = publish_worse(args.registry, args.worse)
        print(f"published a deliberately worse {args.worse} as version {version}")
        return 0
    built = build_examples(args.registry, only_missing=not args.force)
    if not built:
        print(f"example models already in {args.registry} (use --force to add new versions)")
    return 0


def run_package(args: argparse.Namespace) -> int:
    """`serving package`."""
    from pathlib import Path

    from serving.errors import ServingError
    from serving.packaging.package import PackageError, package

    meta = {}
    for item in args.meta or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"serving package: --meta takes key=value, got {item!r}", file=sys.stderr)
            return 2
        meta[key] = value
    from serving.registry.s3 import S3RegistryError, is_s3_url

    try:
        result = package(
            args.model_file, args.name,
            args.registry if is_s3_url(args.registry) else Path(args.registry),
            sample_data=Path(args.sample_data) if args.sample_data else None,
            datatype=args.datatype, n_features=args.n_features, atol=args.tolerance,
            allow_parity_failure=args.allow_parity_failure, metadata=meta,
            feature_names=args.feature_names.split(",") if args.feature_names else None,
            labels=tuple(args.labels.split(",")) if args.labels else None,
            expected_outputs=Path(args.expected_outputs) if args.expected_outputs else None,
            tracking_uri=args.tracking_uri,
        )
    except (PackageError, ServingError, S3RegistryError, ValueError) as exc:
        print(f"serving package: {exc}", file=sys.stderr)
        return 1
    for note in result.notes:
        print(note, file=sys.stderr if note.startswith("warning") else sys.stdout)
    p = result.parity
    if p.get("checked", True):
        agree = f", label agreement {p['label_agreement']:.4f}" if "label_agreement" in p else ""
        print(f"parity on {p['rows']} rows ({p['data']}): max abs diff {p['max_abs_diff']:.3g}"
              f"{agree}, tolerance {p['tolerance']:g}: {'passed' if p['passed'] else 'FAILED'}")
    else:
        print(f"parity not checked: {p['reason']}")
    if not result.published:
        print("not published: parity failed (--allow-parity-failure publishes anyway, and the "
              "manifest records it)", file=sys.stderr)
        return 1
    print(f"published {result.name} version {result.version} in {args.registry}")
    return 0
