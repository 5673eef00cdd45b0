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
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
from answers import (  # loadtests/answers.py, beside this file (Locust puts its folder on sys.path)
    IRIS_CLASSES,
    IRIS_V1,
    IRIS_V2_BINARY,
    IRIS_V2_JSON,
    JSON_HEADERS,
    MIX_CASES,
    ROUTING_HEADER,
    SCENARIO_TAGS,
    check_classifier_v2,
    check_iris_binary,
    check_regression_v2,
    check_v1_iris,
    judge,
)
from locust import FastHttpUser, events, tag, task
from locust.runners import WorkerRunner

logger = logging.getLogger("loadtests")

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
