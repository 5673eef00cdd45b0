"""`serving rollout`: start and steer a progressive rollout on a running server."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from serving.cli.client import DEFAULT_URL, ServerError, admin_token, request_json, server_url
from serving.registry.rollout_state import RolloutHistory, RolloutStatus, StepKind


def add_parser(sub: Any) -> None:
    """The `rollout` command."""
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
    ro.add_argument("--url", help=f"the server (default: $SERVING_URL, else {DEFAULT_URL})")
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
    ro.set_defaults(run=run)


def _duration(text: str) -> float:
    """`300`, `300s`, `5m`, `1h` -> seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 30s, 5m, 1h)") from None


def run(args: argparse.Namespace) -> int:
    """`serving rollout`: 0, or 1 with the server's reason on stderr."""
    if args.action == "start" and args.candidate is None and not args.plan:
        print("serving rollout start: --candidate VERSION is required", file=sys.stderr)
        return 2
    url = str(server_url(args.url))
    base = f"/v2/models/{args.model}/rollout"
    token = admin_token(args.token)
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
        doc = request_json(url, path, method, body, token)
    except ServerError as exc:
        print(f"serving rollout: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(format_history(doc) if args.action == "history" else format_rollout(doc))
    return 0


def format_history(doc: dict[str, Any]) -> str:
    """Delivery metrics and one line per finished rollout."""
    s = (h := RolloutHistory.from_json(doc)).summary
    def num(v: float | None, unit: str = "") -> str:
        return "-" if v is None else f"{v:g}{unit}"
    lines = [
        f"model {h.model}: {s.rollouts} rollouts: {s.promoted} promoted, "
        f"{s.rolled_back} rolled back, {s.aborted} aborted "
        f"(rollback share {s.rollback_share:.0%})",
        f"mean time to promote {num(s.mean_time_to_promote_s, 's')}, mean time to restore "
        f"{num(s.mean_time_to_restore_s, 's')}, promotions per day "
        f"{num(s.promotions_per_day)}",
        "",
    ]
    for r in h.rollouts:
        restore = "" if r.time_to_restore_s is None else f", restored in {r.time_to_restore_s:g}s"
        lines.append(f"{r.finished_at[:19]}  v{r.baseline} -> v{r.candidate}  "
                     f"{r.outcome.value:<11} {r.duration_s:g}s{restore}  {r.reason}")
    return "\n".join(lines)


def format_rollout(doc: dict[str, Any]) -> str:
    """A readable timeline of a rollout's status document."""
    ro = (st := RolloutStatus.from_json(doc)).rollout
    lines = [
        f"model {st.model}: candidate v{ro.candidate} vs baseline v{ro.baseline} — "
        f"{ro.state.value.upper()}" + (f" ({ro.reason})" if ro.reason else ""),
        f"now: primary v{st.primary}"
        + (f", canary v{st.canary} at {st.canary_weight:g}%" if st.canary else "")
        + (f", shadows {list(st.shadows)}" if st.shadows else ""),
        "plan: " + " -> ".join(
            "shadow" if s.kind is StepKind.SHADOW else f"{s.weight:g}%" for s in ro.steps
        ) + f" -> promote (bake {ro.bake_s:g}s); each step {ro.steps[0].duration_s:g}s",
        "",
        f"{'time':<12} {'step':<12} {'decision':<9} {'by':<10} reason / measured",
    ]
    for h in ro.history:
        where = h.kind if h.kind in ("bake", "shadow") else f"{h.kind} {h.weight:g}%"
        measured = ", ".join(f"{k}={v}" for k, v in h.measured.items() if v is not None)
        lines.append(f"{h.at[11:23]:<12} {where:<12} {h.decision:<9} {h.by:<10} {h.reason}")
        if measured:
            lines.append(f"{'':<46}{measured}")
    return "\n".join(lines)
