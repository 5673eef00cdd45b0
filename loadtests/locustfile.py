"""Locust scenarios for the model server; every answer is checked, not just its status.

One user class per scenario, each with a `weight` and a tag of the same name (`--tags v1`):
`v2-json`, `v2-binary`, `v1`, `mix`, `canary`. Run and options: loadtests/README.md.

Request bodies are built once at import, so the generator spends its time sending requests, not
encoding them. A request whose response is wrong (label, shape, datatype, row count,
probabilities that do not sum to 1, a routing key that changes version) is marked failed with
the reason, which shows in Locust's failure report and fails `--exit-code-on-error`.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import random
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from locust import FastHttpUser, events, tag, task
from locust.runners import WorkerRunner

logger = logging.getLogger("loadtests")

# Iris rows with the label the example `iris` model gives them (each with probability >= 0.87),
# checked once against a running server; every scenario that sends iris checks its answer.
IRIS_KNOWN: list[tuple[list[float], int]] = [
    ([5.1, 3.5, 1.4, 0.2], 0),
    ([5.4, 3.7, 1.5, 0.2], 0),
    ([5.0, 3.3, 1.4, 0.2], 0),
    ([7.0, 3.2, 4.7, 1.4], 1),
    ([5.0, 2.0, 3.5, 1.0], 1),
    ([6.6, 3.0, 4.4, 1.4], 1),
    ([5.7, 2.8, 4.1, 1.3], 1),
    ([6.3, 3.3, 6.0, 2.5], 2),
    ([6.9, 3.2, 5.7, 2.3], 2),
    ([6.7, 3.1, 5.6, 2.4], 2),
    ([6.7, 3.0, 5.2, 2.3], 2),
]
IRIS_CLASSES = 3
PROBA_SUM_TOL = 1e-3  # FP32 softmax/vote sums
ROUTING_HEADER = "X-Routing-Key"
SCENARIO_TAGS = ("v2-json", "v2-binary", "v1", "mix", "canary")

JSON_HEADERS = {"Content-Type": "application/json", "Accept-Encoding": "identity"}


# --- request bodies, built once --------------------------------------------------------------


def v2_json_body(rows: list[list[float]], request_id: str) -> bytes:
    """A V2 inference request for the single FP32 input `input`."""
    return orjson.dumps({
        "id": request_id,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [len(rows), len(rows[0])],
                    "data": rows}],
    })


def v2_binary_body(rows: list[list[float]]) -> tuple[bytes, dict[str, str]]:
    """Triton binary tensors: JSON header + little-endian FP32 rows; all outputs binary."""
    blob = struct.pack(f"<{len(rows) * len(rows[0])}f", *itertools.chain.from_iterable(rows))
    head = orjson.dumps({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [len(rows), len(rows[0])],
                    "parameters": {"binary_data_size": len(blob)}}],
        "parameters": {"binary_data_output": True},
    })
    headers = {"Inference-Header-Content-Length": str(len(head)),
               "Content-Type": "application/octet-stream", "Accept-Encoding": "identity"}
    return head + blob, headers


def synthetic_rows(rng: random.Random, n: int, width: int, lo: float, hi: float,
                   step: float = 1e-4) -> list[list[float]]:
    """Rows of `width` values in [lo, hi], rounded to `step` (digits uses 1/16)."""
    return [[round(rng.uniform(lo, hi) / step) * step for _ in range(width)] for _ in range(n)]


IRIS_V2_JSON = [(v2_json_body([row], f"iris-{i}"), f"iris-{i}", label)
                for i, (row, label) in enumerate(IRIS_KNOWN)]
IRIS_V2_BINARY = [(*v2_binary_body([row]), label) for row, label in IRIS_KNOWN]
IRIS_V1 = [(orjson.dumps({"instances": [row]}), label) for row, label in IRIS_KNOWN]


class MixCase:
    """Pre-built V2 JSON requests for one model at one batch size, and what a right answer is."""

    def __init__(self, model: str, rows: int, width: int, lo: float, hi: float,
                 classes: int | None, seed: int, step: float = 1e-4, pool: int = 16) -> None:
        rng = random.Random(seed)
        self.model, self.rows, self.classes = model, rows, classes
        self.name = f"mix {model} x{rows}"
        self.path = f"/v2/models/{model}/infer"
        self.bodies = [
            (v2_json_body(synthetic_rows(rng, rows, width, lo, hi, step), f"{model}-{k}"),
             f"{model}-{k}")
            for k in range(pool)
        ]


# Feature ranges follow the training data: digits are 8x8 images / 16, diabetes features are
# mean-centred and scaled (|x| < 0.2), breast-cancer features are positive and unscaled.
MIX_CASES = {
    "forest1": MixCase("forest", 1, 30, 0.0, 30.0, classes=2, seed=1),
    "forest8": MixCase("forest", 8, 30, 0.0, 30.0, classes=2, seed=2),
    "digits1": MixCase("digits", 1, 64, 0.0, 1.0, classes=10, seed=3, step=1 / 16),
    "digits16": MixCase("digits", 16, 64, 0.0, 1.0, classes=10, seed=4, step=1 / 16),
    "diabetes4": MixCase("diabetes", 4, 10, -0.1, 0.1, classes=None, seed=5),
}


# --- response checks: each returns what is wrong, or None ------------------------------------


def check_classifier_v2(doc: dict[str, Any], model: str, rows: int, classes: int,
                        request_id: str | None = None,
                        labels: list[int] | None = None) -> str | None:
    """`label` INT64 [rows] and `probabilities` FP32 [rows, classes], rows summing to 1."""
    if doc.get("model_name") != model:
        return f"model_name {doc.get('model_name')!r}, want {model!r}"
    if request_id is not None and doc.get("id") != request_id:
        return f"id {doc.get('id')!r} not echoed (sent {request_id!r})"
    outs = {o["name"]: o for o in doc["outputs"]}
    label, proba = outs.get("label"), outs.get("probabilities")
    if label is None or proba is None:
        return f"outputs {sorted(outs)}, want label and probabilities"
    if label["datatype"] != "INT64" or label["shape"] != [rows] or len(label["data"]) != rows:
        return f"label {label['datatype']} {label['shape']}, want INT64 [{rows}]"
    if (proba["datatype"] != "FP32" or proba["shape"] != [rows, classes]
            or len(proba["data"]) != rows * classes):
        return f"probabilities {proba['datatype']} {proba['shape']}, want FP32 [{rows}, {classes}]"
    return check_labels_and_proba(label["data"], proba["data"], classes, labels)


def check_labels_and_proba(got: list[int], proba: list[float] | tuple[float, ...], classes: int,
                           want: list[int] | None) -> str | None:
    """Each row's probabilities sum to 1 and its label is the most probable class (or `want`)."""
    for i, lab in enumerate(got):
        row = proba[i * classes : (i + 1) * classes]
        if abs(math.fsum(row) - 1.0) > PROBA_SUM_TOL:
            return f"row {i}: probabilities sum to {math.fsum(row):.6f}"
        if not 0 <= lab < classes or row[lab] < max(row) - 1e-6:
            return f"row {i}: label {lab} is not the most probable class of {list(row)}"
    if want is not None and list(got) != want:
        return f"labels {list(got)}, want {want}"
    return None


def check_regression_v2(doc: dict[str, Any], model: str, rows: int,
                        request_id: str) -> str | None:
    """`variable` FP32 [rows, 1], every value finite."""
    if doc.get("model_name") != model:
        return f"model_name {doc.get('model_name')!r}, want {model!r}"
    if doc.get("id") != request_id:
        return f"id {doc.get('id')!r} not echoed (sent {request_id!r})"
    out = {o["name"]: o for o in doc["outputs"]}.get("variable")
    if out is None:
        return "no output 'variable'"
    if out["datatype"] != "FP32" or out["shape"] != [rows, 1] or len(out["data"]) != rows:
        return f"variable {out['datatype']} {out['shape']}, want FP32 [{rows}, 1]"
    if not all(math.isfinite(v) for v in out["data"]):
        return f"non-finite prediction in {out['data']}"
    return None


def check_iris_binary(content: bytes, header_length: str | None, label: int) -> str | None:
    """Decode a binary-output iris answer: JSON header, then `label` and `probabilities` bytes."""
    if header_length is None:
        return "no Inference-Header-Content-Length header in a binary response"
    n = int(header_length)
    head, tail = orjson.loads(content[:n]), content[n:]
    if head.get("model_name") != "iris":
        return f"model_name {head.get('model_name')!r}"
    blobs: dict[str, tuple[dict[str, Any], bytes]] = {}
    offset = 0
    for out in head["outputs"]:
        size = out.get("parameters", {}).get("binary_data_size")
        if size is None:
            return f"output {out['name']} is not binary"
        blobs[out["name"]] = (out, tail[offset : offset + size])
        offset += size
    if offset != len(tail):
        return f"binary outputs declare {offset} bytes, body has {len(tail)}"
    (lab_spec, lab_blob), (pr_spec, pr_blob) = blobs["label"], blobs["probabilities"]
    if lab_spec["datatype"] != "INT64" or lab_spec["shape"] != [1] or len(lab_blob) != 8:
        return f"label {lab_spec['datatype']} {lab_spec['shape']} {len(lab_blob)} bytes"
    if (pr_spec["datatype"] != "FP32" or pr_spec["shape"] != [1, IRIS_CLASSES]
            or len(pr_blob) != 4 * IRIS_CLASSES):
        return f"probabilities {pr_spec['datatype']} {pr_spec['shape']} {len(pr_blob)} bytes"
    labels = list(struct.unpack("<q", lab_blob))
    proba = struct.unpack(f"<{IRIS_CLASSES}f", pr_blob)
    return check_labels_and_proba(labels, proba, IRIS_CLASSES, [label])


def check_v1_iris(doc: dict[str, Any], label: int) -> str | None:
    """`{"predictions": [{"label": .., "probabilities": [3 floats]}]}` with the known label."""
    preds = doc["predictions"]
    if len(preds) != 1:
        return f"{len(preds)} predictions for 1 instance"
    pred = preds[0]
    if len(pred["probabilities"]) != IRIS_CLASSES:
        return f"{len(pred['probabilities'])} probabilities, want {IRIS_CLASSES}"
    return check_labels_and_proba([pred["label"]], pred["probabilities"], IRIS_CLASSES, [label])


def judge(resp: Any, check: Callable[[], str | None]) -> None:
    """Mark a `catch_response` response: a non-200 status, a bad body or a failed check fails."""
    if resp.status_code != 200:
        detail = getattr(resp, "error", None) or (resp.text or "")[:200]
        resp.failure(f"HTTP {resp.status_code}: {detail}")
        return
    try:
        problem = check()
    except (ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
        problem = f"malformed response ({type(exc).__name__}: {exc}): {(resp.text or '')[:200]}"
    if problem:
        resp.failure(problem)
    else:
        resp.success()


# --- command-line options ---------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument("--think-time", type=float, default=0.0, include_in_web_ui=True,
                        help="max seconds each user waits between requests, uniform from 0 "
                             "(default 0: closed loop, as fast as the server answers)")
    parser.add_argument("--routing-allow-moves", action="store_true", default=False,
                        include_in_web_ui=True,
                        help="canary: let a routing key move to another version once (a "
                             "rollout step during the run); only moving back fails")


def _wait_time(user: FastHttpUser) -> float:
    opts = user.environment.parsed_options
    think = getattr(opts, "think_time", 0.0) if opts is not None else 0.0
    return random.uniform(0, think) if think > 0 else 0.0


@events.init.add_listener
def _select_scenarios(environment: Any, **_kwargs: Any) -> None:
    """Drop the user classes `--tags`/`--exclude-tags` leave without tasks.

    Locust 2.18 filters tasks, not classes, and a class with no task left fails when spawned.
    """
    opts = environment.parsed_options
    if opts is None:
        return
    want = set(opts.tags) if opts.tags else None
    drop = set(opts.exclude_tags) if opts.exclude_tags else set()
    keep = []
    for cls in environment.user_classes:
        tags = set().union(*(getattr(t, "locust_tag_set", set()) for t in cls.tasks))
        if (want is None or tags & want) and not tags & drop:
            keep.append(cls)
    if not keep:
        raise SystemExit(f"--tags/--exclude-tags select no scenario; the tags are "
                         f"{', '.join(SCENARIO_TAGS)}")
    environment.user_classes[:] = keep


# --- scenarios --------------------------------------------------------------------------------


class ServingUser(FastHttpUser):
    """Base: closed loop by default, `--think-time` to pace; never spawned itself."""

    abstract = True
    wait_time = _wait_time


class V2JsonUser(ServingUser):
    """V2 JSON, one known iris row per request; the label must be the known one."""

    weight = 3

    def on_start(self) -> None:
        self.cases = itertools.cycle(random.sample(IRIS_V2_JSON, len(IRIS_V2_JSON)))

    @tag("v2-json")
    @task
    def infer(self) -> None:
        body, rid, label = next(self.cases)
        with self.client.post("/v2/models/iris/infer", data=body, headers=JSON_HEADERS,
                              name="v2-json iris", catch_response=True) as resp:
            judge(resp, lambda: check_classifier_v2(orjson.loads(resp.content), "iris", 1,
                                                    IRIS_CLASSES, rid, [label]))


class V2BinaryUser(ServingUser):
    """Triton binary tensors in and out, one known iris row; labels decoded from the bytes."""

    weight = 2

    def on_start(self) -> None:
        self.cases = itertools.cycle(random.sample(IRIS_V2_BINARY, len(IRIS_V2_BINARY)))

    @tag("v2-binary")
    @task
    def infer(self) -> None:
        body, headers, label = next(self.cases)
        with self.client.post("/v2/models/iris/infer", data=body, headers=headers,
                              name="v2-binary iris", catch_response=True) as resp:
            judge(resp, lambda: check_iris_binary(
                resp.content, resp.headers.get("inference-header-content-length"), label))


class V1User(ServingUser):
    """TensorFlow-Serving-style V1 predict, one known iris instance."""

    weight = 2

    def on_start(self) -> None:
        self.cases = itertools.cycle(random.sample(IRIS_V1, len(IRIS_V1)))

    @tag("v1")
    @task
    def predict(self) -> None:
        body, label = next(self.cases)
        with self.client.post("/v1/models/iris:predict", data=body, headers=JSON_HEADERS,
                              name="v1 iris", catch_response=True) as resp:
            judge(resp, lambda: check_v1_iris(orjson.loads(resp.content), label))


class MixUser(ServingUser):
    """Every example model over V2 JSON at 1 to 16 rows; answers checked for shape and sense."""

    weight = 2

    def on_start(self) -> None:
        self.iris = itertools.cycle(random.sample(IRIS_V2_JSON, len(IRIS_V2_JSON)))
        self.pools: dict[str, Iterator[tuple[bytes, str]]] = {
            key: itertools.cycle(random.sample(c.bodies, len(c.bodies)))
            for key, c in MIX_CASES.items()
        }

    def _send(self, key: str) -> None:
        case = MIX_CASES[key]
        body, rid = next(self.pools[key])
        with self.client.post(case.path, data=body, headers=JSON_HEADERS, name=case.name,
                              catch_response=True) as resp:
            if case.classes is None:
                judge(resp, lambda: check_regression_v2(orjson.loads(resp.content), case.model,
                                                        case.rows, rid))
            else:
                judge(resp, lambda: check_classifier_v2(orjson.loads(resp.content), case.model,
                                                        case.rows, case.classes, rid))

    @tag("mix")
    @task(2)
    def iris(self) -> None:
        body, rid, label = next(self.iris)
        with self.client.post("/v2/models/iris/infer", data=body, headers=JSON_HEADERS,
                              name="mix iris x1", catch_response=True) as resp:
            judge(resp, lambda: check_classifier_v2(orjson.loads(resp.content), "iris", 1,
                                                    IRIS_CLASSES, rid, [label]))

    @tag("mix")
    @task(2)
    def forest1(self) -> None:
        self._send("forest1")

    @tag("mix")
    @task(1)
    def forest8(self) -> None:
        self._send("forest8")

    @tag("mix")
    @task(2)
    def digits1(self) -> None:
        self._send("digits1")

    @tag("mix")
    @task(1)
    def digits16(self) -> None:
        self._send("digits16")

    @tag("mix")
    @task(1)
    def diabetes4(self) -> None:
        self._send("diabetes4")


# --- canary routing ---------------------------------------------------------------------------

# Per process: requests answered by each version, and the version each routing key last got.
# Workers send theirs to the master with each stats report; the master (or a standalone run)
# prints the totals when Locust quits and writes them to `<--csv prefix>_routing.csv`.
_version_requests: Counter[str] = Counter()
_key_versions: dict[str, str] = {}
_user_ids = itertools.count()


class CanaryUser(ServingUser):
    """V2 JSON iris with `X-Routing-Key: user-<n>`; a key must stay on one model version."""

    weight = 1

    def on_start(self) -> None:
        runner = self.environment.runner
        n = next(_user_ids) + 1_000_000 * (getattr(runner, "worker_index", 0) or 0)
        self.key = f"user-{n}"
        self.headers = {**JSON_HEADERS, ROUTING_HEADER: self.key}
        self.version: str | None = None
        self.left: set[str] = set()  # versions this key has moved away from
        opts = self.environment.parsed_options
        self.allow_moves = bool(getattr(opts, "routing_allow_moves", False))
        self.cases = itertools.cycle(random.sample(IRIS_V2_JSON, len(IRIS_V2_JSON)))

    def _check(self, doc: dict[str, Any], rid: str, label: int) -> str | None:
        problem = check_classifier_v2(doc, "iris", 1, IRIS_CLASSES, rid, [label])
        if problem:
            return problem
        version = doc.get("model_version")
        if not isinstance(version, str) or not version:
            return f"no model_version in the response (got {version!r})"
        _version_requests[version] += 1
        _key_versions[self.key] = version
        if self.version is not None and version != self.version:
            moved = f"{ROUTING_HEADER} {self.key} moved from version {self.version} to {version}"
            if not self.allow_moves or version in self.left:
                self.version = version
                return moved
            self.left.add(self.version)
        self.version = version
        return None

    @tag("canary")
    @task
    def infer(self) -> None:
        body, rid, label = next(self.cases)
        with self.client.post("/v2/models/iris/infer", data=body, headers=self.headers,
                              name="canary iris", catch_response=True) as resp:
            judge(resp, lambda: self._check(orjson.loads(resp.content), rid, label))



@events.test_start.add_listener
def _reset_routing(**_kwargs: Any) -> None:
    _version_requests.clear()
    _key_versions.clear()


@events.report_to_master.add_listener
def _send_routing(data: dict[str, Any], **_kwargs: Any) -> None:
    data["routing"] = {"requests": dict(_version_requests), "keys": dict(_key_versions)}
    _version_requests.clear()


@events.worker_report.add_listener
def _merge_routing(data: dict[str, Any], **_kwargs: Any) -> None:
    routing = data.get("routing") or {}
    _version_requests.update(routing.get("requests", {}))
    _key_versions.update(routing.get("keys", {}))


@events.quitting.add_listener
def _report_routing(environment: Any, **_kwargs: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or not _version_requests:
        return
    keys = Counter(_key_versions.values())
    rows = [(v, _version_requests[v], keys[v]) for v in sorted(_version_requests, key=_vkey)]
    total = sum(_version_requests.values())
    summary = ", ".join(f"v{v}: {n} requests ({100 * n / total:.1f}%), {k} keys"
                        for v, n, k in rows)
    logger.info("canary routing: %s", summary)
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        with open(f"{prefix}_routing.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["model_version", "requests", "routing_keys"])
            w.writerows(rows)


def _vkey(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)
