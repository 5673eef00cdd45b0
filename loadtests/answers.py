"""What the Locust scenarios send and how they judge the answers: request bodies (built once),
the iris rows with known labels, and response checks that each return what is wrong, or None.
Imported by locustfile.py (Locust puts the locustfile's folder on sys.path)."""

from __future__ import annotations

import itertools
import math
import random
import struct
from collections.abc import Callable
from typing import Any

import orjson

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
