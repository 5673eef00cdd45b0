"""Payload logging and feedback through real servers: segments in a directory (read back with
pandas, as the README shows), in S3 (moto's server), CloudEvents to a real HTTP receiver, a
stalled receiver that must cost requests nothing, shadows logged under the primary's id."""

from __future__ import annotations

import gzip
import http.server
import logging
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_iris

from serving.packaging.examples import publish_worse
from serving.registry.routing_state import RoutingState, Shadow, write_routing
from tests.conftest import ClientThreads, run_server, wait_for

pytestmark = pytest.mark.e2e

X, Y = load_iris(return_X_y=True)
TOKEN = "feedback-secret"


def body(i: int, rid: str | None = None) -> bytes:
    doc: dict[str, object] = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                          "data": X[i].tolist()}]}
    if rid is not None:
        doc["id"] = rid
    return orjson.dumps(doc)


def logging_toml(registry: Path, text: str) -> None:
    toml = registry / "iris" / "model.toml"
    toml.write_text(toml.read_text() + "\n[logging]\n" + text)


@pytest.fixture
def registry(registry_copy: Path) -> Path:
    for other in ("forest", "digits", "alltypes", "tabular"):
        shutil.rmtree(registry_copy / other, ignore_errors=True)
    return registry_copy


def metric(url: str, name: str, **labels: str) -> float | None:
    text = httpx.get(f"{url}/metrics").text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def load_segments(folder: Path):  # type: ignore[no-untyped-def]
    """The README's few lines of pandas: one row per logged request row, one column per
    input and output."""
    import pandas as pd

    df = pd.concat(pd.read_json(f, lines=True, compression="gzip", dtype=False)
                   for f in sorted(folder.glob("*/*.jsonl.gz")))
    cols = pd.concat([pd.json_normalize(df["inputs"].tolist()),
                      pd.json_normalize(df["outputs"].tolist())], axis=1)
    wide = pd.concat([df.drop(columns=["inputs", "outputs"]).reset_index(drop=True), cols],
                     axis=1)
    return wide.explode(list(cols.columns), ignore_index=True)


def test_segments_feedback_and_live_quality(registry: Path, tmp_path: Path) -> None:
    logs = tmp_path / "payload"
    logging_toml(registry, "sample = 1.0\nsegment_s = 0.2\nrecent = 5\n")
    with run_server(registry, tmp_path, "--payload-log", str(logs), "--admin-token",
                    TOKEN) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        rows = list(range(0, 150, 5))  # 30 requests, every class
        for i in rows:
            r = c.post("/v2/models/iris/infer", content=body(i, f"q{i}"))
            assert r.status_code == 200 and r.headers["x-request-id"] == f"q{i}"
        r = c.post("/v1/models/iris:predict", json={"instances": [X[7].tolist()]})
        generated = r.headers["x-request-id"]  # V1 has no id: the server made one
        assert r.status_code == 200 and generated

        wait_for(lambda: len(_ids(logs)) == 31, timeout=30)
        assert not list(logs.rglob("*.tmp"))
        df = load_segments(logs)
        assert len(df) == 31 and {"id", "time", "version", "route", "latency_ms", "input",
                                  "label", "probabilities"} <= set(df.columns)
        q10 = df[df["id"] == "q10"].iloc[0]
        assert np.allclose(q10["input"], X[10], atol=1e-6) and q10["route"] == "primary"
        answered = dict(zip(df["id"], df["label"], strict=True))

        entries = [{"id": f"q{i}", "truth": int(Y[i])} for i in rows]
        # feedback is a write: the admin token is required
        assert c.post("/v2/models/iris/feedback", json=entries[0]).status_code == 401
        auth = {"authorization": f"Bearer {TOKEN}"}
        r = c.post("/v2/models/iris/feedback", json=entries[0], headers=auth)
        assert r.status_code == 200 and r.json()["accepted"] == 1
        again = c.post("/v2/models/iris/feedback", json=entries[0], headers=auth)
        assert again.status_code == 409 and "already" in again.json()["error"]
        unknown = c.post("/v2/models/iris/feedback", json={"id": "never", "truth": 0},
                         headers=auth)
        assert unknown.status_code == 404 and "never" in unknown.json()["error"]
        bad = c.post("/v2/models/iris/feedback", content=b'{"id": 5}', headers=auth)
        assert bad.status_code == 400 and "error" in bad.json()
        # older ids than the 5 kept in memory are joined from the segments
        batch = {"feedback": [*entries[1:], {"id": "never"}, {"id": generated,
                                                                "truth": "virginica"}]}
        r = c.post("/v2/models/iris/feedback", json=batch, headers=auth)
        assert r.status_code == 200
        assert (r.json()["accepted"], r.json()["invalid"]) == (30, 1)

        key = {"model": "iris", "version": "1", "route": "primary"}
        truth = {f"q{i}": int(Y[i]) for i in rows} | {generated: 2}
        expected = np.mean([answered[k] == v for k, v in truth.items()])
        assert metric(s.url, "serving_live_accuracy", **key) == pytest.approx(expected)
        assert metric(s.url, "serving_feedback_labelled_rows_total", **key) == 31
        assert metric(s.url, "serving_feedback_coverage_ratio", **key) == 1.0
        assert metric(s.url, "serving_feedback_total", model="iris", outcome="duplicate") == 1
        assert metric(s.url, "serving_live_recall", **key, **{"class": "0"}) is not None
        assert metric(s.url, "serving_payload_dropped_total", reason="buffer_full") == 0


def _ids(folder: Path) -> list[str]:
    out = []
    for f in folder.glob("*/*.jsonl.gz"):
        out += [orjson.loads(line)["id"] for line in gzip.decompress(f.read_bytes()).splitlines()]
    return out


def test_shadow_answers_are_logged_under_the_primarys_id(registry: Path, tmp_path: Path) -> None:
    logs = tmp_path / "payload"
    toml = registry / "iris" / "model.toml"
    toml.write_text(toml.read_text().replace("auto_promote = true", "auto_promote = false")
                    .replace('policy = "latest"', 'policy = "all"'))
    logging_toml(registry, "sample = 1.0\nsegment_s = 0.2\n")
    worse = publish_worse(registry, "iris")
    write_routing(registry, "iris", RoutingState(primary=1, shadows=[Shadow(worse, 1.0)]))
    with run_server(registry, tmp_path, "--payload-log", str(logs), "--poll", "0.1") as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        wait_for(lambda: c.post("/v2/models/iris/infer", content=body(0)).status_code == 200)
        for i in range(20):
            assert c.post("/v2/models/iris/infer", content=body(i * 7, f"s{i}")).status_code \
                == 200
        wait_for(lambda: sum(i.startswith("s") for i in _ids(logs)) == 40, timeout=30)
    df = load_segments(logs)
    df = df[df["id"].str.startswith("s")]
    routes = df.groupby("id")["route"].apply(sorted)
    assert all(r == ["primary", "shadow"] for r in routes)
    assert set(df[df["route"] == "shadow"]["version"].astype(str)) == {str(worse)}


class Receiver(http.server.ThreadingHTTPServer):
    """A CloudEvents receiver (binary content mode): keeps each event's headers and body."""

    def __init__(self) -> None:
        self.events: list[tuple[dict[str, str], bytes]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["content-length"]))
                server.events.append(({k.lower(): v for k, v in self.headers.items()}, data))
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = self
        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    t = threading.Thread(target=r.serve_forever, daemon=True)
    t.start()
    yield r
    r.shutdown()
    r.server_close()


def test_cloudevents_carry_kserve_logger_attributes(
    registry: Path, tmp_path: Path, receiver: Receiver
) -> None:
    url = f"http://127.0.0.1:{receiver.server_address[1]}/events"
    with run_server(registry, tmp_path, "--payload-log", url, "--payload-sample", "1") as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        assert c.post("/v2/models/iris/infer", content=body(60, "ce-1")).status_code == 200
        wait_for(lambda: len(receiver.events) >= 2, timeout=30)
    (req_h, req_b), (res_h, res_b) = receiver.events[:2]
    for h in (req_h, res_h):
        assert h["ce-specversion"] == "1.0" and h["ce-id"] == "ce-1"
        assert h["ce-inferenceservicename"] == "iris" and h["ce-component"] == "predictor"
        assert h["ce-endpoint"] == "default" and h["ce-namespace"] and h["ce-source"]
        assert h["ce-time"].endswith("Z") and h["content-type"] == "application/json"
    assert req_h["ce-type"] == "org.kubeflow.serving.inference.request"
    assert res_h["ce-type"] == "org.kubeflow.serving.inference.response"
    request, response = orjson.loads(req_b), orjson.loads(res_b)
    assert request["id"] == "ce-1" and request["inputs"][0]["name"] == "input"
    assert np.allclose(request["inputs"][0]["data"], X[60], atol=1e-6)
    assert response["model_name"] == "iris" and response["model_version"] == "1"
    assert {o["name"] for o in response["outputs"]} == {"label", "probabilities"}


def test_segments_are_uploaded_to_s3(registry: Path, tmp_path: Path) -> None:
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_CONFIG_FILE": str(tmp_path / "none"),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
        s3 = boto3.session.Session().client(
            "s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket="lake")
        logging_toml(registry, "sample = 1.0\nsegment_s = 0.2\n")

        def keys() -> list[str]:
            return [o["Key"] for o in s3.list_objects_v2(Bucket="lake").get("Contents", ())]

        with run_server(registry, tmp_path, "--payload-log", "s3://lake/payload/v1",
                        env=env) as s, httpx.Client(base_url=s.url, timeout=10) as c:
            for i in range(5):
                assert c.post("/v2/models/iris/infer", content=body(i, f"s3-{i}")).status_code \
                    == 200
            wait_for(lambda: bool(keys()), timeout=30)
        [key, *_] = keys()
        assert key.startswith("payload/v1/iris/part-") and key.endswith(".jsonl.gz")
        ids = []
        for k in keys():
            data = s3.get_object(Bucket="lake", Key=k)["Body"].read()
            ids += [orjson.loads(line)["id"] for line in gzip.decompress(data).splitlines()]
        assert sorted(ids) == [f"s3-{i}" for i in range(5)]
    finally:
        moto.stop()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Load(ClientThreads):
    """Clients that send logged iris requests; every answer must come, and be a 200."""

    def __init__(self, url: str) -> None:
        super().__init__(url, clients=4)
        self.done = 0
        self.failures: list[str] = []

    def run(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=3) as c:  # the stalled sink takes 5 s
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    r = c.post("/v2/models/iris/infer", content=body(n % 150, f"{index}-{n}"))
                    if r.status_code != 200:
                        self.failures.append(f"status {r.status_code}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                with self.lock:
                    self.done += 1


def test_a_stalled_sink_drops_the_oldest_and_requests_never_wait(
    registry: Path, tmp_path: Path
) -> None:
    stalled = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(64)
    url = f"http://127.0.0.1:{stalled.getsockname()[1]}/"
    logging_toml(registry, "recent = 100\n")  # the store of recent predictions stays small
    try:
        with run_server(registry, tmp_path, "--payload-log", url, "--payload-sample", "1",
                        "--payload-buffer", "200") as s, Load(s.url) as load:
            wait_for(lambda: load.done >= 1_500, timeout=120)
            rss_early = _rss_kib(s.proc.pid)
            target = load.done + 3_000
            wait_for(lambda: load.done >= target, timeout=180)
            rss_late = _rss_kib(s.proc.pid)
            dropped = metric(s.url, "serving_payload_dropped_total", reason="buffer_full")
            buffered = metric(s.url, "serving_payload_buffered")
        assert load.failures == []
        assert dropped is not None and dropped >= 1_000
        assert buffered is not None and buffered <= 200
        # 3000 more requests logged into a full buffer: memory stays where it was
        assert rss_late - rss_early < 8 * 1024, (rss_early, rss_late)
    finally:
        stalled.close()
