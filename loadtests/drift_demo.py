"""Drift demo: send iris traffic drawn from the training data, then the same with one feature
moved by two standard deviations, and print the server's drift report after each.

    python loadtests/drift_demo.py [--url http://127.0.0.1:8000] [--feature 2] [--rows 4000]
"""

from __future__ import annotations

import argparse
import json
import urllib.request

import numpy as np
from sklearn.datasets import load_iris


def send(url: str, rows: np.ndarray) -> None:
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                   "shape": list(rows.shape), "data": rows.tolist()}]}).encode()
    req = urllib.request.Request(f"{url}/v2/models/iris/infer", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def report(url: str, title: str) -> None:
    with urllib.request.urlopen(f"{url}/v2/models/iris/drift", timeout=10) as r:
        doc = json.loads(r.read())
    print(f"== {title}: {doc['window_rows']} rows in the window "
          f"(reference {doc['reference_rows']} rows, PSI threshold {doc['psi_threshold']})")
    print(f"{'feature':<20} {'PSI':>8} {'KS':>7} {'NaN':>6} {'out of range':>13}  drifted")
    for f in doc["features"]:
        print(f"{f['name']:<20} {f['psi']:>8.4f} {f['ks']:>7.4f} {f['nan_share']:>6.1%} "
              f"{f['out_of_range_share']:>13.1%}  {'YES' if f['drifted'] else 'no'}")
    label = doc["outputs"]["label"]
    print(f"prediction drift (label): PSI {label['psi']:.4f}, shares {label['shares']} "
          f"vs reference {label['reference_shares']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--feature", type=int, default=2, help="column to shift (2: petal length)")
    ap.add_argument("--rows", type=int, default=12_000, help="rows per phase")
    args = ap.parse_args()
    x = load_iris().data.astype(np.float32)
    rng = np.random.default_rng(0)
    for _ in range(args.rows // 16):
        send(args.url, x[rng.integers(0, len(x), 16)])
    report(args.url, "traffic like the training data")
    sd = x[:, args.feature].std()
    for _ in range(args.rows // 16):
        rows = x[rng.integers(0, len(x), 16)].copy()
        rows[:, args.feature] += 2 * sd
        send(args.url, rows)
    report(args.url, f"feature {args.feature} moved by two standard deviations")


if __name__ == "__main__":
    main()
