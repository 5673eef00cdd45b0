"""The `serving` command: serve, examples, package, models, rollout."""

from __future__ import annotations

import argparse
import os
import sys

from serving import __version__
from serving.cli import models, package, rollout, serve


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand's parser; each sets `run`, the function that carries it out."""
    parser = argparse.ArgumentParser(
        prog="serving", description="A fast ONNX model server (Open Inference Protocol, V1)."
    )
    parser.add_argument("--version", action="version", version=f"serving {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parser(sub)
    package.add_parsers(sub)
    models.add_parser(sub)
    rollout.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`serving models list | head -1`): stop quietly with the status
        # of a command killed by SIGPIPE. Python would flush stdout again at exit and print a
        # second error: point it at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13
    return status
