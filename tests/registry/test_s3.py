"""A registry on S3-compatible storage: moto's real S3 server on loopback, real `serving`
processes, real HTTP. Publishing, the synced cache, polling, routing state in the bucket."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import orjson
import pytest

from serving.packaging.examples import EXAMPLES, MODEL_TOML, build_example
from serving.packaging.publish import publish_version
from serving.registry.manifest import Manifest
from serving.registry.mirror import S3Mirror
from serving.registry.routing_state import RoutingState, routing_bytes
from serving.registry.s3 import S3Registry, S3Url, default_cache_dir
from tests.conftest import run_server, wait_for

pytestmark = pytest.mark.e2e  # real server processes (the slow lane)

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

ROW = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                "data": [5.1, 3.5, 1.4, 0.2]}]})


@dataclass
class S3:
    endpoint: str
    env: dict[str, str]
    client: object

    def bucket(self) -> str:
        name = f"reg-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)  # type: ignore[attr-defined]
        return name

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=data)  # type: ignore[attr-defined]

    def get(self, bucket: str, key: str) -> bytes | None:
        try:
            obj = self.client.get_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
        except self.client.exceptions.NoSuchKey:  # type: ignore[attr-defined]
            return None
        return obj["Body"].read()

    def keys(self, bucket: str) -> list[str]:
        r = self.client.list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]
        return sorted(o["Key"] for o in r.get("Contents", ()))


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    """moto's S3 server on a free loopback port, and the AWS variables that point boto3 at it
    (in this process and in the servers and CLIs the tests start)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        nowhere = str(tmp_path_factory.mktemp("aws") / "none")
        env = {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": nowhere,
            "AWS_SHARED_CREDENTIALS_FILE": nowhere,
        }
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            mp.delenv("AWS_PROFILE", raising=False)
            mp.delenv("AWS_SESSION_TOKEN", raising=False)
            yield S3(env["AWS_ENDPOINT_URL"], env, boto3.session.Session().client("s3"))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def iris() -> tuple[Manifest, bytes]:
    return build_example(next(e for e in EXAMPLES if e.name == "iris"))


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})


def _index(c: httpx.Client) -> dict[str, tuple[str, str]]:
    return {e["version"]: (e["state"], e["reason"]) for e in c.post("/v2/repository/index").json()
            if e["name"] == "iris"}


def _infer(c: httpx.Client, version: str = "") -> httpx.Response:
    path = f"/v2/models/iris/versions/{version}/infer" if version else "/v2/models/iris/infer"
    return c.post(path, content=ROW)


def _serving_version(c: httpx.Client) -> str:
    r = _infer(c)
    return r.json()["model_version"] if r.status_code == 200 else f"status {r.status_code}"


def test_publish_serve_poll_and_routing_state_through_s3(
    s3: S3, iris: tuple[Manifest, bytes], tmp_path: Path
) -> None:
    bucket = s3.bucket()
    url = f"s3://{bucket}/team/models"
    manifest, onnx_bytes = iris
    # Pinned primary, every version loaded: new versions wait for a rollout.
    toml = (MODEL_TOML.format(max_batch_size=64).replace("auto_promote = true",
            "auto_promote = false").replace('policy = "latest"', 'policy = "all"'))
    s3.put(bucket, "team/models/iris/model.toml", toml.encode())

    # `serving package` publishes an .onnx file as version 1; `serving models` reads it back.
    onnx_file = tmp_path / "iris.onnx"
    onnx_file.write_bytes(onnx_bytes)
    r = _cli("package", str(onnx_file), "--name", "iris", "--registry", url, env=s3.env)
    assert r.returncode == 0, r.stderr
    assert f"published iris version 1 in {url}" in r.stdout
    assert s3.keys(bucket) == ["team/models/iris/1/manifest.json", "team/models/iris/1/model.onnx",
                               "team/models/iris/model.toml"]
    r = _cli("models", "list", "--registry", url, env=s3.env)
    assert r.returncode == 0 and r.stdout.startswith("iris\tv1\tpublished"), r.stderr
    r = _cli("models", "show", "iris", "--registry", url, env=s3.env)
    assert r.returncode == 0 and "iris version 1: published" in r.stdout, r.stderr

    cache = tmp_path / "cache"
    with run_server(url, tmp_path, "--admin-open", "--registry-cache", str(cache), "--poll", "0.2",
                    env=s3.env) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        assert _infer(c).json()["model_version"] == "1"
        assert (cache / "iris" / "1" / "model.onnx").read_bytes() == onnx_bytes
        # The pinned primary is routing state: it lives in the bucket, for every replica.
        wait_for(lambda: s3.get(bucket, "team/models/_state/iris.json") is not None, 10)
        assert orjson.loads(s3.get(bucket, "team/models/_state/iris.json"))["primary"] == 1

        # A half-published version (no manifest yet) is invisible ...
        s3.put(bucket, "team/models/iris/2/model.onnx", onnx_bytes)
        # ... and the next publisher skips its number.
        assert publish_version(url, replace(manifest, version=0), onnx_bytes) == 3
        wait_for(lambda: _index(c).get("3", ("",))[0] == "READY", 15)
        assert "2" not in _index(c) and not (cache / "iris" / "2").exists()
        assert _infer(c, "3").status_code == 200
        assert _serving_version(c) == "1"  # pinned: v3 waits for a rollout

        # A corrupted upload (model.onnx does not match the manifest's sha256) is refused by
        # the sync; the index says why and what served keeps serving.
        bad = onnx_bytes[:-10] + b"0123456789"
        s3.put(bucket, "team/models/iris/4/model.onnx", bad)
        s3.put(bucket, "team/models/iris/4/manifest.json",
               orjson.dumps(replace(manifest, version=4).to_json()))
        wait_for(lambda: _index(c).get("4", ("",))[0] == "FAILED", 15)
        assert "checksum mismatch" in _index(c)["4"][1]
        assert not (cache / "iris" / "4").exists()
        assert _serving_version(c) == "1"
        assert c.get("/v2/health/ready").status_code == 200

        # A rollout started over HTTP is saved in the bucket, and moves the primary there.
        r = c.post("/v2/models/iris/rollout", json={"candidate": 3, "steps": "shadow",
                                                    "step_duration_s": 60, "bake_s": 0})
        assert r.status_code == 200, r.text

        def state() -> dict:
            return orjson.loads(s3.get(bucket, "team/models/_state/iris.json") or b"{}")

        assert state()["rollout"]["candidate"] == 3 and state()["rollout"]["state"] == "running"
        assert [s["version"] for s in state()["shadows"]] == [3]
        assert c.post("/v2/models/iris/rollout/promote").status_code == 200
        assert state()["rollout"]["state"] == "promoted"
        assert state()["primary"] == 3 and _serving_version(c) == "3"

        # Another replica (or an operator) changes the routing state in the bucket: polling
        # applies it here.
        s3.put(bucket, "team/models/_state/iris.json", routing_bytes(RoutingState(primary=1)))
        wait_for(lambda: _serving_version(c) == "1", 15)

        # model.toml changes propagate.
        s3.put(bucket, "team/models/iris/model.toml",
               toml.replace("max_batch_size = 64", "max_batch_size = 8").encode())
        wait_for(lambda: c.get("/v2/models/iris/config").json()["max_batch_size"] == 8, 15)

        # A version deleted from the bucket leaves the cache and is unloaded.
        s3.client.delete_objects(Bucket=bucket, Delete={"Objects": [  # type: ignore[attr-defined]
            {"Key": "team/models/iris/3/manifest.json"}, {"Key": "team/models/iris/3/model.onnx"}]})
        wait_for(lambda: "3" not in _index(c), 15)
        assert not (cache / "iris" / "3").exists()
        assert _infer(c, "3").status_code == 404
        assert _serving_version(c) == "1"
    log = s.log()
    assert log.count("refused iris v4") == 1, log  # once, not at every poll
    assert "Traceback" not in log and "sync" not in log.replace("synced", ""), log
    assert not list((cache / ".tmp").iterdir())  # no download left behind

    # --poll 0: synced once at start (a warning says so), served from a fresh cache.
    with run_server(url, tmp_path, "--registry-cache", str(tmp_path / "cache2"),
                    env=s3.env) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        assert _serving_version(c) == "1"
        assert _infer(c, "4").status_code == 404
    assert "versions published later are not seen" in s.log()


def test_keys_never_escape_the_cache_and_odd_names_are_ignored(
    s3: S3, iris: tuple[Manifest, bytes], tmp_path: Path
) -> None:
    bucket = s3.bucket()
    manifest, onnx_bytes = iris
    doc = orjson.dumps(replace(manifest, version=1).to_json())
    for key in ("p/../escape/1/manifest.json", "p/..%2Fx/1/manifest.json",
                "p/iris/01/manifest.json",
                "p/iris/1/../../../oops", "p/iris/1/sub/model.onnx", "p/iris/1/.hidden",
                "p/.tmp/1/manifest.json", "p/_state/../../x.json", "p/_state/.json",
                "p/Bad Name/1/manifest.json", "p/iris/0/manifest.json", "p/iris//1/x",
                "top-level.json", "p/iris/model.toml/x"):
        s3.put(bucket, key, doc)
    s3.put(bucket, "p/iris/1/model.onnx", onnx_bytes)
    s3.put(bucket, "p/iris/1/manifest.json", doc)
    s3.put(bucket, "p/_state/iris.json", routing_bytes(RoutingState(primary=1)))

    root = tmp_path / "sandbox"
    cache = root / "cache"
    report = S3Mirror(S3Registry(f"s3://{bucket}/p"), cache).sync()
    assert report.added == [("iris", 1)] and not report.refused
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["cache/.lock", "cache/_state/iris.json", "cache/iris/1/manifest.json",
                     "cache/iris/1/model.onnx"]


def test_processes_sharing_a_cache_and_racing_publishers(
    s3: S3, iris: tuple[Manifest, bytes], tmp_path: Path
) -> None:
    bucket = s3.bucket()
    url = f"s3://{bucket}/models"
    manifest, onnx_bytes = iris
    versions: list[int] = []

    def publish() -> None:
        v = publish_version(url, replace(manifest, version=0), onnx_bytes,
                            MODEL_TOML.format(max_batch_size=64))
        versions.append(v)

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(versions) == [1, 2, 3, 4]  # one number each, none overwritten
    reg = S3Registry(url)
    assert not reg.put_if_absent("models/iris/1/manifest.json", b"{}")  # exists: refused
    assert reg.versions("iris") == [1, 2, 3, 4]
    assert reg.manifest("iris", 2).version == 2

    # Mirrors in several "processes" (threads with their own mirror) share one cache.
    cache = tmp_path / "shared"
    mirrors = [S3Mirror(S3Registry(url), cache) for _ in range(4)]
    errors: list[BaseException] = []

    def sync(m: S3Mirror) -> None:
        try:
            m.sync()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sync, args=(m,)) for m in mirrors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(p.name for p in (cache / "iris").iterdir()) == ["1", "2", "3", "4", "model.toml"]
    assert not list((cache / ".tmp").iterdir())
    for v in (1, 2, 3, 4):
        assert (cache / "iris" / str(v) / "model.onnx").read_bytes() == onnx_bytes

    # Deleting every version removes the model from the cache (the server then unloads it).
    keys = [k for k in s3.keys(bucket) if k.startswith("models/iris/")]
    s3.client.delete_objects(Bucket=bucket, Delete={  # type: ignore[attr-defined]
        "Objects": [{"Key": k} for k in keys]})
    report = mirrors[0].sync()
    assert report.removed == [("iris", None)] and not (cache / "iris").exists()


def test_cache_dirs_and_bad_urls(s3: S3, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path))
        dirs = {p: default_cache_dir(S3Url.parse(f"s3://bucket/{p}")) for p in
                ("", "a", "a/b", "a+b", "weird prefix")}
    assert dirs[""] == tmp_path / "serving" / "s3" / "bucket" / "+"
    assert dirs["a/b"] == tmp_path / "serving" / "s3" / "bucket" / "a+b"
    assert len(set(dirs.values())) == len(dirs)  # "a+b" is hashed, apart from "a/b"
    for bad in ("s3://", "s3://b", "s3://bucket/a//b", "s3://bucket/../x"):
        with pytest.raises(ValueError):
            S3Url.parse(bad)
    r = _cli("models", "list", "--registry", "s3://no-such-bucket-here/x", env=s3.env)
    assert r.returncode == 1 and "NoSuchBucket" in r.stderr


def test_server_stays_unready_until_the_bucket_can_be_read(
    s3: S3, iris: tuple[Manifest, bytes], tmp_path: Path
) -> None:
    bucket = f"late-{uuid.uuid4().hex[:12]}"  # not created yet
    url = f"s3://{bucket}/models"
    manifest, onnx_bytes = iris
    with run_server(url, tmp_path, "--registry-cache", str(tmp_path / "cache"), "--poll", "0.2",
                    wait_ready=False, env=s3.env) as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        wait_for(lambda: "nothing cached from" in s.log(), 15)
        assert c.get("/v2/health/live").status_code == 200
        assert c.get("/v2/health/ready").status_code == 503
        s3.client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
        publish_version(url, replace(manifest, version=0), onnx_bytes)
        # (an empty bucket read before the publish makes a ready server with no models, as an
        # empty registry directory does; polling then loads iris)
        wait_for(lambda: _serving_version(c) == "1", 15)
        wait_for(lambda: c.get("/v2/health/ready").status_code == 200, 15)


def test_the_controller_lease_is_a_conditional_write(s3: S3) -> None:
    """Two replicas racing for the lease in a bucket: If-None-Match creates it once, If-Match
    on the ETag read renews or takes it over once; a stale ETag loses."""
    from serving.registry.lease import Lease, open_lease_store

    bucket = s3.bucket()
    a, b = open_lease_store(f"s3://{bucket}/reg"), open_lease_store(f"s3://{bucket}/reg")
    assert a.read() == (None, "")
    assert a.swap(Lease("a", "http://a", 10.0, 0.0), "")
    assert not b.swap(Lease("b", "http://b", 10.0, 0.0), "")  # created meanwhile
    lease, etag = b.read()
    assert lease == Lease("a", "http://a", 10.0, 0.0) and etag
    assert a.swap(Lease("a", "http://a", 20.0, 0.0), etag)  # a renews...
    assert not b.swap(Lease("b", "http://b", 30.0, 25.0), etag)  # ...so b's ETag is stale
    assert b.read()[0] == Lease("a", "http://a", 20.0, 0.0)
    assert s3.keys(bucket) == ["reg/_state/_controller.lease"]
