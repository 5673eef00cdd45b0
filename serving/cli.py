"""The `serving` command: serve, examples."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import MISSING, fields
from typing import Any

from serving import __version__
from serving.config import ServerConfig, load_server_config


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the registry's models over HTTP",
        description=(
            "Serve every model in the registry over the Open Inference Protocol (V2) and "
            "V1 predict. Each setting below comes from its flag, else the environment variable "
            "shown, else the [server] table of --config FILE, else its default."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--config", metavar="FILE", help="TOML file with a [server] table (env: SERVING_CONFIG)"
    )
    for f in fields(ServerConfig):
        flag = "--" + f.name.replace("_", "-")
        env = f"SERVING_{f.name.upper()}"
        text = f"{f.metadata.get('help', '')} (env: {env})"
        default = f.default if f.default is not MISSING else None
        if f.type in (bool, "bool"):
            p.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                help=f"{text} [default: {str(default).lower()}]",
            )
        else:
            kind = int if f.type in (int, "int") else str
            p.add_argument(
                flag, dest=f.name, type=kind, default=None, metavar=f.name.upper(),
                help=f"{text} [default: {default!r}]",
            )
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def _serve(args: argparse.Namespace) -> int:
    flags = {f.name: getattr(args, f.name) for f in fields(ServerConfig)}
    try:
        config = load_server_config(flags, config_file=args.config)
    except (ValueError, OSError) as exc:
        print(f"serving serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if config.build_examples:
        from serving.registry.layout import Layout

        if not Layout(config.registry).model_names():
            from serving.packaging.examples import build_examples

            build_examples(config.registry, only_missing=True)
    from serving.http.server import run_server

    return run_server(config)


def _examples(args: argparse.Namespace) -> int:
    from serving.packaging.examples import build_examples

    built = build_examples(args.registry, only_missing=not args.force)
    if not built:
        print(f"example models already in {args.registry} (use --force to add new versions)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serving", description="A fast ONNX model server (Open Inference Protocol, V1)."
    )
    parser.add_argument("--version", action="version", version=f"serving {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(sub)
    ex = sub.add_parser(
        "examples",
        help="build the example models (scikit-learn bundled datasets) into a registry",
        description=(
            "Train the example models with fixed seeds on scikit-learn's bundled datasets, "
            "convert them to ONNX, check parity and publish them (iris, forest, digits, diabetes)."
        ),
    )
    ex.add_argument("--registry", default="models", help="registry directory (default: models)")
    ex.add_argument(
        "--force", action="store_true", help="publish new versions even if the models exist"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "examples":
        return _examples(args)
    return 2
