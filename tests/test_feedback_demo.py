"""loadtests/feedback_demo.py end to end: a candidate worse only on the truth is rolled back on
live accuracy (a real server, a real rollout, Locust sending requests with ids and feedback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DEMO = Path(__file__).resolve().parents[1] / "loadtests" / "feedback_demo.py"

pytestmark = pytest.mark.e2e


def test_the_swapped_labels_keep_the_label_distribution() -> None:
    sys.path.insert(0, str(DEMO.parent))
    try:
        from feedback_demo import worse_on_truth
    finally:
        sys.path.remove(str(DEMO.parent))
    from sklearn.datasets import load_iris

    _x, swapped = worse_on_truth()
    y = load_iris().target
    assert np.array_equal(np.bincount(swapped), np.bincount(y))
    assert 0.3 < np.mean(swapped != y) < 0.35


def test_the_demo_rolls_back_on_live_accuracy(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(DEMO), "--duration", "120", "--users", "4"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    out = proc.stdout + proc.stderr[-3000:]
    assert proc.returncode == 0, out
    assert "rollout rolled_back" in out and "accuracy: candidate" in out, out
    assert 'serving_live_accuracy{model="iris",route="canary",version="2"}' in out, out
