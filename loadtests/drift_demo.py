"""Drift demo: send iris traffic drawn from the training data, then the same with one feature
moved by two standard deviations, and print the server's drift report after each.

    python loadtests/drift_demo.py [--url http://127.0.0.1:8000] [--feature 2] [--rows 12000]

Run it against a freshly started server: the drift window keeps the rows it has already seen,
so a second run starts from the first one's shifted traffic.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.datasets import load_iris

from serving.client import Client


def send(client: Client, rows: np.ndarray) -> None:
    client.post("/v2/models/iris/infer", {"inputs": [
        {"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.tolist()}]})


def report(client: Client, title: str) -> None:
    doc = client.get("/v2/models/iris/drift")
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
    client = Client(args.url, timeout_s=10)
    x = load_iris().data.astype(np.float32)
    rng = np.random.default_rng(0)
    for _ in range(args.rows // 16):
        send(client, x[rng.integers(0, len(x), 16)])
    report(client, "traffic like the training data")
    sd = x[:, args.feature].std()
    for _ in range(args.rows // 16):
        rows = x[rng.integers(0, len(x), 16)].copy()
        rows[:, args.feature] += 2 * sd
        send(client, rows)
    report(client, f"feature {args.feature} moved by two standard deviations")


if __name__ == "__main__":
    main()
