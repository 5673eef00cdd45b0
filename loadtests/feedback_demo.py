"""Live-accuracy demo: a candidate that is worse only on the truth, caught by feedback.

    python loadtests/feedback_demo.py [--duration 90] [--users 8]

It builds a registry with two iris versions: v1 (LogisticRegression) and v2, a decision tree
trained with the versicolor and virginica labels swapped on the wider-sepal half of each
class. v2 sees the same inputs and answers each class as often as v1 does (the
swap exchanges equal halves), so input drift and the label distribution cannot tell them apart;
on the truth, v2 is wrong on a third of the rows. A server is started over it with payload
logging on; a rollout of v2 (canary 50%) is started with `max_accuracy_drop = 0.05`; Locust
(`loadtests/feedback_locust.py`) sends requests with ids and then their true labels. The
rollout controller rolls v2 back on live accuracy. Everything stops by itself within
`--duration` seconds; exit status 0 when the rollback was on accuracy.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

HERE = Path(__file__).resolve().parent
TOKEN = "demo-feedback-token"
PLAN = {"candidate": 2, "steps": "50", "step_duration_s": 8, "bake_s": 0,
        "thresholds": {"max_accuracy_drop": 0.05, "min_labels": 100, "min_requests": 100,
                       "max_p99_ratio": 5.0, "min_latency_increase_ms": 20.0}}


def worse_on_truth() -> tuple[np.ndarray, np.ndarray]:
    """Iris labels with classes 1 and 2 swapped on their wider-sepal half: the same number of
    each label, a third of them wrong."""
    data = load_iris()
    x, y = data.data.astype(np.float32), data.target.copy()
    swapped = y.copy()
    for cls, other in ((1, 2), (2, 1)):
        rows = np.flatnonzero(y == cls)
        wide = rows[np.argsort(x[rows, 1], kind="stable")[len(rows) // 2:]]  # the wider half
        swapped[wide] = other
    assert np.array_equal(np.bincount(swapped), np.bincount(y))
    return x, swapped


def build_registry(root: Path) -> None:
    from serving.packaging.package import build_from_estimator, publish
    from serving.registry.routing_state import RoutingState, write_routing

    data = load_iris()
    x = data.data.astype(np.float32)
    names = [str(n) for n in data.target_names]
    features = [str(f) for f in data.feature_names]
    xs, ys = worse_on_truth()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        good = LogisticRegression(max_iter=1000, random_state=0).fit(x, data.target)
        bad = DecisionTreeClassifier(max_depth=6, random_state=0).fit(xs, ys)
    for est, text in ((good, "LogisticRegression"), (bad, "tree on swapped labels")):
        manifest, onnx = build_from_estimator("iris", est, x, labels=tuple(names),
                                              feature_names=features,
                                              source={"kind": "demo", "description": text})
        publish(root, manifest, onnx)
    toml = root / "iris" / "model.toml"
    toml.write_text(toml.read_text().replace("auto_promote = true", "auto_promote = false")
                    .replace('policy = "latest"', 'policy = "all"')
                    + "\n[logging]\nsample = 1.0\n")
    write_routing(root, "iris", RoutingState(primary=1))  # v1 serves until the rollout


def serve(root: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    ready = tmp / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", "serve", "--registry", str(root), "--port", "0",
         "--grpc-port", "0",
         "--ready-file", str(ready), "--admin-token", TOKEN, "--payload-log",
         str(tmp / "payload"), "--log-level", "warning", "--drain-grace", "0"],
        stdout=(tmp / "server.log").open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((tmp / "server.log").read_text())
        time.sleep(0.1)
    host, port = ready.read_text().split()
    url = f"http://{host}:{port}"
    while httpx.get(f"{url}/v2/health/ready").status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("server never ready")
        time.sleep(0.1)
    return proc, url


def accuracy_lines(url: str) -> list[str]:
    return [line for line in httpx.get(f"{url}/metrics").text.splitlines()
            if line.startswith(("serving_live_accuracy", "serving_feedback_labelled_rows"))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=90, help="give up after this long (s)")
    ap.add_argument("--users", type=int, default=8)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="feedback-demo-"))
    build_registry(tmp / "registry")
    proc, url = serve(tmp / "registry", tmp)
    auth = {"authorization": f"Bearer {TOKEN}"}
    locust = None
    try:
        r = httpx.post(f"{url}/v2/models/iris/rollout", json=PLAN, headers=auth)
        if r.status_code != 200:
            raise RuntimeError(f"the rollout did not start: {r.text}")
        print(f"rollout of v2 started: canary 50% for {PLAN['step_duration_s']} s, "
              f"max_accuracy_drop {PLAN['thresholds']['max_accuracy_drop']}")
        locust = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", str(HERE / "feedback_locust.py"),
             "--headless", "-H", url, "-u", str(args.users), "-r", str(args.users), "-t",
             f"{int(args.duration)}s", "--only-summary", "--stop-timeout", "2"],
            cwd=tmp, env={**os.environ, "FEEDBACK_TOKEN": TOKEN},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + args.duration
        rollout: dict[str, object] = {}
        while time.monotonic() < deadline:
            rollout = httpx.get(f"{url}/v2/models/iris/rollout", headers=auth).json()["rollout"]
            if rollout["state"] not in ("running", "baking", "paused"):
                break
            time.sleep(0.5)
        print("\n".join(accuracy_lines(url)))
        for h in rollout.get("history", []):  # type: ignore[attr-defined]
            print(f"step {h['kind']} {h['weight']}%: {h['decision']}: {h['reason']}")
        print(f"rollout {rollout.get('state')}: {rollout.get('reason', '')}")
        caught = rollout.get("state") == "rolled_back" and "accuracy" in str(
            rollout.get("reason"))
        return 0 if caught else 1
    finally:
        for p in (locust, proc):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)


if __name__ == "__main__":
    raise SystemExit(main())
