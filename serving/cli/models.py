"""`serving models list|show`: the registry's versions, with a running server's view of them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from serving.cli.client import ServerError, admin_token, request_json, server_url


def add_parser(sub: Any) -> None:
    """The `models` command."""
    md = sub.add_parser("models", help="list or show the registry's models")
    md.add_argument("action", choices=["list", "show"])
    md.add_argument("name", nargs="?", help="model name (for show)")
    md.add_argument("--registry", default="models",
                    help="registry directory or s3://bucket/prefix (default: models)")
    md.add_argument("--url", help="a running server, to show each version's state "
                                  "(default: $SERVING_URL, if set)")
    md.add_argument("--token", help="admin token for --url, if the server has one "
                                    "(default: $SERVING_ADMIN_TOKEN)")
    md.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """`serving models`: 0, or 1 with a message on stderr."""
    from serving.registry.s3 import S3RegistryError
    from serving.registry.store import open_registry

    if args.action == "show" and not args.name:
        print("serving models show: which model?", file=sys.stderr)
        return 2
    url = server_url(args.url, default=None)
    try:
        states = _server_states(url, admin_token(args.token)) if url else None
        registry = open_registry(args.registry)
        if args.action == "show" and not registry.has_model(args.name):
            print(f"serving models: no model {args.name!r} in {args.registry}", file=sys.stderr)
            return 1
        names = registry.model_names() if args.action == "list" else [args.name]
        for name in names:
            for version in registry.versions(name):
                _print_version(registry, name, version, states, args.action == "list")
    except (ServerError, S3RegistryError, ValueError) as exc:
        print(f"serving models: {exc}", file=sys.stderr)
        return 1
    return 0


def _server_states(url: str, token: str) -> dict[tuple[str, str], str]:
    """(name, version) -> state (with its reason when not ready), from the server's index."""
    entries = request_json(url, "/v2/repository/index", "POST", {}, token, timeout_s=10)
    return {
        (e["name"], e["version"]): e["state"] + (
            f" ({e['reason']})" if e.get("reason") and e["state"] != "READY" else "")
        for e in entries
    }


def _parity(p: dict[str, Any]) -> str:
    if not p or not p.get("checked", True):
        return "unchecked"
    if p.get("passed"):
        return "passed"
    return "FAILED" + (" (override)" if p.get("override") else "")


def _print_version(
    registry: Any, name: str, version: int, states: dict[tuple[str, str], str] | None,
    one_line: bool,
) -> None:
    try:
        m = registry.manifest(name, version)
    except ValueError as exc:
        print(f"{name}\t{version}\tinvalid manifest: {exc}")
        return
    state = "published" if states is None else states.get((name, str(version)), "-")
    sig = ", ".join(f"{t.name} {t.datatype}{list(t.shape)}" for t in m.inputs)
    outs = ", ".join(f"{t.name} {t.datatype}{list(t.shape)}" for t in m.outputs)
    parity = _parity(m.parity)
    if one_line:
        print(f"{name}\tv{version}\t{state}\tin: {sig}\tout: {outs}\tparity {parity}")
        return
    print(f"{name} version {version}: {state}")
    print(f"  created   {m.created_at}  sha256 {m.sha256}")
    print(f"  inputs    {sig}")
    print(f"  outputs   {outs}")
    if m.labels:
        print(f"  labels    {', '.join(m.labels)}")
    print(f"  parity    {parity}: " + ", ".join(f"{k}={v}" for k, v in m.parity.items()))
    print("  framework " + ", ".join(f"{k} {v}" for k, v in m.framework.items()))
    if m.metadata:
        print("  metadata  " + ", ".join(f"{k}={v}" for k, v in m.metadata.items()))
