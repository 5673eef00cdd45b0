"""Locust scenario for live quality: iris requests with ids, then their true labels as feedback.

Each user sends V2 JSON iris rows (drawn from the dataset, whose labels are known) with
`id: <user>-<n>`, the id doubling as the routing key so a canary keeps each id on one side.
Every `FEEDBACK_EVERY` answers it POSTs the true labels of those ids in one batch to
`/v2/models/iris/feedback` (with `Authorization: Bearer $FEEDBACK_TOKEN` when set). An answer
must be a 200 naming a version; a feedback batch must come back with every entry accepted.

    FEEDBACK_TOKEN=secret locust -f loadtests/feedback_locust.py --headless -H URL -u 8 -t 60s
"""

from __future__ import annotations

import itertools
import os
import random

import orjson
from locust import FastHttpUser, task
from sklearn.datasets import load_iris

X, Y = load_iris(return_X_y=True)
FEEDBACK_EVERY = 20
_users = itertools.count()


class FeedbackUser(FastHttpUser):
    """Traffic with ids, then the truth for them (the trusted service that learns it)."""

    def on_start(self) -> None:
        self.user = next(_users)
        self.n = 0
        self.rnd = random.Random(self.user)
        self.pending: list[dict[str, object]] = []
        token = os.environ.get("FEEDBACK_TOKEN", "")
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}

    @task
    def infer_then_feedback(self) -> None:
        self.n += 1
        i = self.rnd.randrange(len(X))
        rid = f"u{self.user}-{self.n}"
        body = orjson.dumps({"id": rid, "inputs": [{"name": "input", "datatype": "FP32",
                                                     "shape": [1, 4], "data": X[i].tolist()}]})
        with self.client.post("/v2/models/iris/infer", data=body, name="infer iris",
                              headers={"x-routing-key": rid}, catch_response=True) as r:
            if r.status_code != 200 or "model_version" not in (r.json() or {}):
                r.failure(f"status {r.status_code}: {r.text[:200]}")
                return
        self.pending.append({"id": rid, "truth": int(Y[i])})
        if len(self.pending) >= FEEDBACK_EVERY:
            batch = orjson.dumps({"feedback": self.pending})
            self.pending = []
            with self.client.post("/v2/models/iris/feedback", data=batch, name="feedback",
                                  headers=self.auth, catch_response=True) as r:
                if r.status_code != 200 or r.json().get("accepted") != FEEDBACK_EVERY:
                    r.failure(f"status {r.status_code}: {r.text[:200]}")
