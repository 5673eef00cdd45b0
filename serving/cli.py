"""The `serving` command: serve, examples, package, models, rollout."""

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
            kind = {"int": int, "float": float}.get(str(f.type), str)
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
    from serving.http.server import run_server

    return run_server(config)


def _examples(args: argparse.Namespace) -> int:
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


def _package(args: argparse.Namespace) -> int:
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
            Path(args.model_file), args.name,
            args.registry if is_s3_url(args.registry) else Path(args.registry),
            sample_data=Path(args.sample_data) if args.sample_data else None,
            datatype=args.datatype, n_features=args.n_features, atol=args.tolerance,
            allow_parity_failure=args.allow_parity_failure, metadata=meta,
            feature_names=args.feature_names.split(",") if args.feature_names else None,
        )
    except (PackageError, ServingError, S3RegistryError, ValueError) as exc:
        print(f"serving package: {exc}", file=sys.stderr)
        return 1
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


def _models(args: argparse.Namespace) -> int:
    from serving.registry.s3 import S3RegistryError
    from serving.registry.store import open_registry

    try:
        registry = open_registry(args.registry)
        return _print_models(args, registry)
    except (S3RegistryError, ValueError) as exc:
        print(f"serving models: {exc}", file=sys.stderr)
        return 1


def _print_models(args: argparse.Namespace, registry: Any) -> int:
    states: dict[tuple[str, str], str] = {}
    if args.url:
        from serving.client import Client, ServerError, Unreachable

        try:
            index = Client(args.url, args.token, timeout_s=10).post("/v2/repository/index")
        except (ServerError, Unreachable) as exc:
            print(f"serving models: cannot read {args.url}: {exc}", file=sys.stderr)
            return 1
        for e in index:
            states[(e["name"], e["version"])] = e["state"] + (
                f" ({e['reason']})" if e.get("reason") and e["state"] != "READY" else "")
    names = registry.model_names() if args.action == "list" else [args.name]
    if args.action == "show" and not registry.has_model(args.name):
        print(f"serving models: no model {args.name!r} in {args.registry}", file=sys.stderr)
        return 1
    for name in names:
        for version in registry.versions(name):
            try:
                m = registry.manifest(name, version)
            except ValueError as exc:
                print(f"{name}\t{version}\tinvalid manifest: {exc}")
                continue
            state = states.get((name, str(version)), "published" if not args.url else "-")
            sig = ", ".join(f"{t.name} {t.datatype}{list(t.shape)}" for t in m.inputs)
            outs = ", ".join(f"{t.name} {t.datatype}{list(t.shape)}" for t in m.outputs)
            p = m.parity
            parity = ("passed" if p.get("passed") else "FAILED" + (" (override)" if
                      p.get("override") else "")) if p.get("checked", True) and p else "unchecked"
            if args.action == "list":
                print(f"{name}\tv{version}\t{state}\tin: {sig}\tout: {outs}\tparity {parity}")
            else:
                print(f"{name} version {version}: {state}")
                print(f"  created   {m.created_at}  sha256 {m.sha256}")
                print(f"  inputs    {sig}")
                print(f"  outputs   {outs}")
                if m.labels:
                    print(f"  labels    {', '.join(m.labels)}")
                print(f"  parity    {parity}: " + ", ".join(f"{k}={v}" for k, v in p.items()))
                print("  framework " + ", ".join(f"{k} {v}" for k, v in m.framework.items()))
                if m.metadata:
                    print("  metadata  " + ", ".join(f"{k}={v}" for k, v in m.metadata.items()))
    return 0


def _duration(text: str) -> float:
    """`300`, `300s`, `5m`, `1h` -> seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 30s, 5m, 1h)") from None


def _rollout(args: argparse.Namespace) -> int:
    import os

    import orjson

    from serving.client import Client, ServerError, Unreachable

    base = f"/v2/models/{args.model}/rollout"
    token = args.token or os.environ.get("SERVING_ADMIN_TOKEN", "")
    body: dict[str, Any] | None = None
    method = "POST"
    if args.action == "start":
        if args.plan:
            with open(args.plan, "rb") as f:
                plan = orjson.loads(f.read())
        else:
            plan = {}
        plan["candidate"] = args.candidate if args.candidate is not None else plan.get("candidate")
        if args.steps or "steps" not in plan:
            plan["steps"] = args.steps or "shadow,5,25,50"
            plan["step_duration_s"] = args.step_duration
            if args.min_requests is not None:
                plan["min_requests"] = args.min_requests
        if args.bake is not None:
            plan["bake_s"] = args.bake
        body, path = plan, base
    elif args.action in ("status", "history"):
        method, path = "GET", base if args.action == "status" else f"{base}/history"
    else:
        body, path = {}, f"{base}/{args.action}"
    try:
        doc = Client(args.url, token).request(method, path, body)
    except (ServerError, Unreachable) as exc:
        print(f"serving rollout: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(format_history(doc) if args.action == "history" else format_rollout(doc))
    return 0


def format_history(doc: dict[str, Any]) -> str:
    """Delivery metrics and one line per finished rollout."""
    s = doc["summary"]
    def num(v: Any, unit: str = "") -> str:
        return "-" if v is None else f"{v:g}{unit}"
    lines = [
        f"model {doc['model']}: {s['rollouts']} rollouts: {s['promoted']} promoted, "
        f"{s['rolled_back']} rolled back, {s['aborted']} aborted "
        f"(rollback share {s['rollback_share']:.0%})",
        f"mean time to promote {num(s['mean_time_to_promote_s'], 's')}, mean time to restore "
        f"{num(s['mean_time_to_restore_s'], 's')}, promotions per day "
        f"{num(s['promotions_per_day'])}",
        "",
    ]
    for r in doc["rollouts"]:
        restore = f", restored in {r['time_to_restore_s']:g}s" if "time_to_restore_s" in r else ""
        lines.append(f"{r['finished_at'][:19]}  v{r['baseline']} -> v{r['candidate']}  "
                     f"{r['outcome']:<11} {r['duration_s']:g}s{restore}  {r['reason']}")
    return "\n".join(lines)


def format_rollout(doc: dict[str, Any]) -> str:
    """A readable timeline of a rollout's status document."""
    ro = doc["rollout"]
    lines = [
        f"model {doc['model']}: candidate v{ro['candidate']} vs baseline v{ro['baseline']} — "
        f"{ro['state'].upper()}" + (f" ({ro['reason']})" if ro.get("reason") else ""),
        f"now: primary v{doc['primary']}"
        + (f", canary v{doc['canary']} at {doc['canary_weight']:g}%" if doc.get("canary") else "")
        + (f", shadows {doc['shadows']}" if doc.get("shadows") else ""),
        "plan: " + " -> ".join(
            "shadow" if st["kind"] == "shadow" else f"{st['weight']:g}%" for st in ro["steps"]
        ) + f" -> promote (bake {ro['bake_s']:g}s); each step {ro['steps'][0]['duration_s']:g}s",
        "",
        f"{'time':<12} {'step':<12} {'decision':<9} {'by':<10} reason / measured",
    ]
    for h in ro["history"]:
        where = "bake" if h["kind"] == "bake" else (
            "shadow" if h["kind"] == "shadow" else f"{h['kind']} {h['weight']:g}%")
        measured = ", ".join(f"{k}={v}" for k, v in h["measured"].items() if v is not None)
        lines.append(f"{h['at'][11:23]:<12} {where:<12} {h['decision']:<9} {h['by']:<10} "
                     f"{h['reason']}")
        if measured:
            lines.append(f"{'':<46}{measured}")
    return "\n".join(lines)


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
    ex.add_argument("--registry", default="models",
                    help="registry directory or s3://bucket/prefix (default: models)")
    ex.add_argument(
        "--force", action="store_true", help="publish new versions even if the models exist"
    )
    ex.add_argument(
        "--worse", metavar="MODEL", choices=["iris"],
        help="publish a deliberately worse new version of MODEL (to watch a rollout fail)",
    )
    pk = sub.add_parser(
        "package",
        help="convert a scikit-learn model (or an .onnx file) into a new registry version",
        description=(
            "Convert a scikit-learn estimator or Pipeline (joblib/pickle: trusted input, read "
            "only here) with skl2onnx, or take an existing .onnx file; check parity against "
            "the estimator on --sample-data (or generated rows); publish it atomically as the "
            "model's next version. A model that fails parity is not published."
        ),
    )
    pk.add_argument("model_file", help="a .joblib/.pkl estimator or an .onnx file")
    pk.add_argument("--name", required=True, help="model name in the registry")
    pk.add_argument("--registry", default="models",
                    help="registry directory or s3://bucket/prefix (default: models)")
    pk.add_argument("--sample-data", help=".npy or .csv rows for the parity check")
    pk.add_argument("--datatype", default="FP32", choices=["FP32", "FP64"],
                    help="input datatype (default: FP32)")
    pk.add_argument("--n-features", type=int, help="input width, if the estimator can't tell")
    pk.add_argument("--tolerance", type=float, default=1e-4,
                    help="max abs difference of probabilities/values (default: 1e-4)")
    pk.add_argument("--feature-names", metavar="A,B,...",
                    help="feature names for drift reports (default: the estimator's, else f0..)")
    pk.add_argument("--allow-parity-failure", action="store_true",
                    help="publish even if parity fails (recorded in the manifest)")
    pk.add_argument("--meta", action="append", metavar="KEY=VALUE",
                    help="user metadata for the manifest (repeatable)")
    md = sub.add_parser("models", help="list or show the registry's models")
    md.add_argument("action", choices=["list", "show"])
    md.add_argument("name", nargs="?", help="model name (for show)")
    md.add_argument("--registry", default="models",
                    help="registry directory or s3://bucket/prefix (default: models)")
    md.add_argument("--url", help="a running server, to show each version's state")
    md.add_argument("--token", help="admin token for --url, if the server has one")
    ro = sub.add_parser(
        "rollout",
        help="start and steer a progressive rollout on a running server",
        description=(
            "Talk to a running server's rollout controller: start a rollout of a candidate "
            "version (shadow, then canary steps, then promotion), show its timeline, or pause, "
            "resume, promote or abort it. The admin token comes from --token or "
            "SERVING_ADMIN_TOKEN."
        ),
    )
    ro.add_argument("action", choices=["start", "status", "pause", "resume", "promote", "abort",
                                       "history"])
    ro.add_argument("model")
    ro.add_argument("--url", default="http://127.0.0.1:8000",
                    help="the server (default: %(default)s)")
    ro.add_argument("--token", help="admin token (default: $SERVING_ADMIN_TOKEN)")
    ro.add_argument("--candidate", type=int, help="version to roll out (start)")
    ro.add_argument("--steps", help="e.g. shadow,5,25,50: a shadow step, then canary percentages")
    ro.add_argument("--step-duration", type=_duration, default=300.0,
                    help="how long each step runs before it is judged, e.g. 30s, 5m (default 5m)")
    ro.add_argument("--min-requests", type=int,
                    help="requests a step needs on each side before it is judged (default 200)")
    ro.add_argument("--bake", type=_duration,
                    help="after promotion, watch the new primary this long (default 60s)")
    ro.add_argument("--plan", help="a JSON plan file (steps, thresholds, bake_s)")
    ro.add_argument("--json", action="store_true", help="print the raw status document")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "examples":
        return _examples(args)
    if args.command == "rollout":
        if args.action == "start" and args.candidate is None and not args.plan:
            print("serving rollout start: --candidate VERSION is required", file=sys.stderr)
            return 2
        return _rollout(args)
    if args.command == "package":
        return _package(args)
    if args.command == "models":
        if args.action == "show" and not args.name:
            print("serving models show: which model?", file=sys.stderr)
            return 2
        return _models(args)
    return 2
