"""A fleet for the tests: replicas as separate `serving serve` processes sharing a registry,
Debian's Prometheus scraping them every second, and Debian's HAProxy balancing round-robin over
them. Every process listens on loopback and is stopped by its PID."""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import onnx
import orjson
from onnx import TensorProto, helper

from tests.conftest import ClientThreads, wait_for

ROW = [6.0, 2.9, 4.5, 1.5]
BODY = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                 "data": ROW}]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary(name: str) -> str:
    """A system tool the fleet needs: missing is a failure (`.ci/system-deps` installs it)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    assert path, f"{name} is not installed (Debian's {name} package: see .ci/system-deps)"
    return path


class Process:
    """A tool run in the background, its output in a log file; stopped by its PID."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        self.cmd, self.log_path = cmd, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def prometheus(tmp: Path, targets: list[str]) -> tuple[Process, str]:
    """Prometheus scraping `targets` every second as job `serving`; not started yet."""
    port = free_port()
    cfg = tmp / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: serving\n    scrape_interval: 1s\n"
        "    scrape_timeout: 900ms\n    static_configs:\n"
        f"      - targets: [{', '.join(repr(t) for t in targets)}]\n")
    cmd = [binary("prometheus"), f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
           f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    return Process(cmd, tmp / "prometheus.log"), f"http://127.0.0.1:{port}"


def wait_prometheus(url: str, targets: int) -> None:
    """Until Prometheus answers and has just scraped every target (not an older sample)."""
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=url, timeout=5) as c:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                r = c.get("/api/v1/query", params={
                    "query": 'sum((time() - timestamp(up{job="serving"})) < bool 2 and up)'})
                result = r.json()["data"]["result"] if r.status_code == 200 else []
                if result and float(result[0]["value"][1]) == targets:
                    return
            time.sleep(0.2)
    raise RuntimeError(f"prometheus at {url} never scraped the {targets} replicas")


def haproxy(tmp: Path, servers: list[str]) -> tuple[Process, str]:
    """HAProxy on a loopback port, round-robin over `servers`, checking readiness every 200 ms
    and retrying a request whose server died under it on another one (inference is
    idempotent)."""
    port = free_port()
    lines = [
        "global", "  maxconn 512", "defaults", "  mode http", "  timeout connect 2s",
        "  timeout client 30s", "  timeout server 30s", "  timeout check 2s", "  retries 3",
        "  option redispatch 1",
        "  retry-on conn-failure empty-response response-timeout 502 503",
        "  option http-buffer-request",
        "frontend fleet", f"  bind 127.0.0.1:{port}", "  default_backend replicas",
        "backend replicas", "  balance roundrobin", "  option httpchk GET /v2/health/ready",
        "  default-server inter 200ms fall 1 rise 2",
        *(f"  server r{i} {s} check" for i, s in enumerate(servers)),
    ]
    cfg = tmp / "haproxy.cfg"
    cfg.write_text("\n".join(lines) + "\n")
    return Process([binary("haproxy"), "-f", str(cfg), "-db"], tmp / "haproxy.log"), \
        f"http://127.0.0.1:{port}"


def permuted(onnx_bytes: bytes) -> bytes:
    """The same classifier with its labels permuted: (label + 1) mod 3."""
    model = onnx.load_from_string(onnx_bytes)
    g = model.graph
    [node] = [n for n in g.node if "label" in n.output]
    node.output[list(node.output).index("label")] = "label_raw"
    g.initializer.extend([helper.make_tensor("one", TensorProto.INT64, [], [1]),
                          helper.make_tensor("three", TensorProto.INT64, [], [3])])
    g.node.extend([helper.make_node("Add", ["label_raw", "one"], ["label_up"]),
                   helper.make_node("Mod", ["label_up", "three"], ["label"])])
    onnx.checker.check_model(model)
    return model.SerializeToString()


class Traffic(ClientThreads):
    """Clients through HAProxy with random routing keys: every answer with its time."""

    def __init__(self, url: str, clients: int = 4) -> None:
        super().__init__(url, clients)
        self.done: list[tuple[float, int, str]] = []  # (unix time answered, status, version)

    def run(self, index: int) -> None:
        rnd = random.Random(index)
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self.stop.is_set():
                headers = {"x-routing-key": f"user-{rnd.randrange(10**9)}",
                           "content-type": "application/json"}
                try:
                    r = c.post("/v2/models/iris/infer", content=BODY, headers=headers)
                    status, version = r.status_code, r.headers.get("x-model-version", "")
                except httpx.TransportError:
                    status, version = 0, ""
                self.done.append((time.time(), status, version))

    def between(self, t0: float, t1: float) -> int:
        """Answers (any HTTP status) in (t0, t1]."""
        return sum(1 for t, s, _ in list(self.done) if t0 < t <= t1 and s)

    def failed(self, since: float = 0.0) -> list[tuple[float, int, str]]:
        return [d for d in list(self.done) if d[1] != 200 and d[0] > since]

    def wait_more(self, n: int) -> None:
        """Until `n` more answers came back."""
        target = len(self.done) + n
        wait_for(lambda: len(self.done) >= target)


def replica_args(port: int, prom_url: str) -> list[str]:
    return ["--port", str(port), "--advertise-url", f"http://127.0.0.1:{port}",
            "--rollout-metrics", "prometheus", "--prometheus-url", prom_url,
            "--controller-lease", "2", "--poll", "0.2", "--admin-open"]

