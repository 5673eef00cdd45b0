"""`serving serve`: settings from flags, SERVING_* variables and --config, then the server (or a
supervisor of worker processes)."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import MISSING, fields
from typing import Any

from serving.config import ServerConfig, load_server_config


def add_parser(sub: Any) -> None:
    """`serving serve`: every ServerConfig field as a flag."""
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
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(
                flag, dest=f.name, type=kind, default=None, metavar=f.name.upper(),
                help=f"{text} [default: {default!r}]",
            )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.set_defaults(run=run)


def _check_tracing() -> None:
    """ValueError unless the OpenTelemetry packages and the OTEL_* settings can trace."""
    try:
        from serving.tracing.export import check
    except ImportError as exc:
        raise ValueError(
            f"--tracing needs OpenTelemetry ({exc.name} is missing): pip install 'serving[otel]'"
        ) from None
    check()


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; the exit status."""
    flags = {f.name: getattr(args, f.name) for f in fields(ServerConfig)}
    try:
        config = load_server_config(flags, config_file=args.config)
        if config.tracing:
            _check_tracing()
    except (ValueError, OSError) as exc:
        print(f"serving serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from serving.registry.s3 import is_s3_url

    if is_s3_url(config.registry) and config.poll <= 0 and config.worker_count() == 1:
        logging.getLogger("serving").warning(
            "registry %s with --poll 0: synced once at start; versions published later are not "
            "seen (set --poll SECONDS to follow the bucket)", config.registry)
    if config.build_examples:
        from serving.registry.store import open_registry

        if not open_registry(config.registry).model_names():
            from serving.packaging.examples import build_examples

            build_examples(config.registry, only_missing=True)
    if config.worker_count() > 1:
        from serving.supervisor import supervise

        return supervise(config)
    from serving.http.server import run_server

    return run_server(config)
