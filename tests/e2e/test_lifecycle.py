"""Hot load and unload under load: new versions take over with zero failed requests, a corrupt
version leaves the old one serving, and model control sits behind the admin token."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
import pytest

from serving.packaging.publish import publish_version
from serving.registry.manifest import read_manifest
from tests.conftest import ClientThreads, run_server, wait_for

GOOD = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                 "data": [5.1, 3.5, 1.4, 0.2]}]})


def _republish(registry: Path, model: str, corrupt: bool = False) -> int:
    """Publish the model's v1 artifact again as its next version (optionally corrupted)."""
    m = read_manifest(registry / model / "1" / "manifest.json")
    data = (registry / model / "1" / "model.onnx").read_bytes()
    if corrupt:
        data = data[:-10] + b"0123456789"  # checksum no longer matches the manifest
    return publish_version(registry, replace(m, version=0), data)


class Load(ClientThreads):
    """Several clients sending requests continuously; counts statuses and serving versions."""

    def __init__(self, url: str, clients: int = 4) -> None:
        super().__init__(url, clients)
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self.errors: list[str] = []
        self.done = [0] * clients  # answers each client has read

    def settle(self) -> None:
        """Wait until every client has read one more answer: none sent before this is in
        flight any more."""
        with self.lock:
            before = list(self.done)
        wait_for(lambda: all(now > then for now, then in zip(self.done, before, strict=True)))

    def run(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as c:
            while not self.stop.is_set():
                r = c.post("/v2/models/iris/infer", content=GOOD)
                with self.lock:
                    self.done[index] += 1
                    self.statuses[r.status_code] += 1
                    if r.status_code == 200:
                        doc = r.json()
                        self.versions[doc["model_version"]] += 1
                        if doc["outputs"][0]["data"] != [0]:
                            self.errors.append(r.text)
                    else:
                        self.errors.append(r.text)

    def seen(self, version: str) -> int:
        with self.lock:
            return self.versions[version]


def test_hot_swap_under_load_with_zero_failures(registry_copy: Path, tmp_path: Path) -> None:
    for other in ("forest", "digits", "alltypes"):
        shutil.rmtree(registry_copy / other)
    with run_server(registry_copy, tmp_path, "--poll", "0.2") as s, \
            httpx.Client(base_url=s.url, timeout=10) as c, Load(s.url) as load:
        wait_for(lambda: load.seen("1") > 50)
        assert _republish(registry_copy, "iris") == 2
        wait_for(lambda: load.seen("2") > 50)  # polling loaded v2, warmed it up, switched

        def states() -> dict[tuple[str, str], str]:
            return {(e["name"], e["version"]): e["state"]
                    for e in c.post("/v2/repository/index").json()}

        # latest-1 policy: v1 drains (no new requests, in-flight ones finish), then goes
        wait_for(lambda: states()[("iris", "1")] == "UNAVAILABLE")
        assert states()[("iris", "2")] == "READY"
        load.settle()  # an answer v1 gave just before it went may still be on its way
        seen_v1 = load.seen("1")

        assert _republish(registry_copy, "iris", corrupt=True) == 3
        wait_for(lambda: any(e["version"] == "3" and e["state"] == "FAILED"
                          for e in c.post("/v2/repository/index").json()))
        before = load.seen("2")
        wait_for(lambda: load.seen("2") > before + 50)  # v2 still serves
        assert c.get("/v2/health/ready").status_code == 200  # a failed newer version: still ready
        meta = c.get("/v2/models/iris/versions/3").json()
        assert meta["state"] == "FAILED" and "checksum mismatch" in meta["reason"]
    assert load.errors == []
    assert set(load.statuses) == {200}, load.statuses
    assert set(load.versions) == {"1", "2"}
    assert load.seen("1") == seen_v1  # nothing was answered by v1 after it was retired
    print(f"hot swap: {sum(load.statuses.values())} requests, versions {dict(load.versions)}")


def test_model_control_needs_the_admin_token(registry_copy: Path, tmp_path: Path) -> None:
    with run_server(registry_copy, tmp_path, "--admin-token", "s3cret") as s, \
            httpx.Client(base_url=s.url, timeout=30) as c:
        auth = {"Authorization": "Bearer s3cret"}
        for path in ("/v2/repository/index", "/v2/repository/models/iris/unload"):
            r = c.post(path)
            assert r.status_code == 401 and "admin token" in r.json()["error"]
            r = c.post(path, headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401
        assert c.post("/v2/models/iris/infer", content=GOOD).status_code == 200

        assert c.post("/v2/repository/models/iris/unload", headers=auth).json() == {}
        r = c.post("/v2/models/iris/infer", content=GOOD)
        assert r.status_code == 503 and "unloaded" in r.json()["error"]
        assert c.get("/v2/models/iris/ready").status_code == 503
        assert c.get("/v2/health/ready").status_code == 200  # unloaded on purpose

        assert c.post("/v2/repository/models/iris/load", headers=auth).json() == {}
        assert c.post("/v2/models/iris/infer", content=GOOD).status_code == 200
        ready = c.post("/v2/repository/index", headers=auth, json={"ready": True}).json()
        assert {"name": "iris", "version": "1", "state": "READY", "reason": ""} in ready

        r = c.post("/v2/repository/models/nope/load", headers=auth)
        assert r.status_code == 404 and "not in the registry" in r.json()["error"]
        r = c.post("/v2/repository/models/..%2Fetc/load", headers=auth)
        assert r.status_code in (400, 404)
        (registry_copy / "diabetes" / "1" / "model.onnx").write_bytes(b"broken")
        r = c.post("/v2/repository/models/diabetes/load", headers=auth)
        assert r.status_code == 200  # v1 was already loaded and READY: nothing to reload


@pytest.mark.parametrize("policy", ['policy = "all"', 'policy = "specific"\nversions = [1]'])
def test_version_policy_all_and_specific(registry_copy: Path, tmp_path: Path, policy) -> None:
    _republish(registry_copy, "iris")
    toml = registry_copy / "iris" / "model.toml"
    toml.write_text(toml.read_text().replace('policy = "latest"', policy))
    with run_server(registry_copy, tmp_path) as s, httpx.Client(base_url=s.url) as c:
        r = c.post("/v2/models/iris/versions/1/infer", content=GOOD)
        assert r.status_code == 200 and r.json()["model_version"] == "1"
        r2 = c.post("/v2/models/iris/versions/2/infer", content=GOOD)
        unversioned = c.post("/v2/models/iris/infer", content=GOOD).json()["model_version"]
        if "all" in policy:
            assert r2.status_code == 200 and unversioned == "2"
        else:
            assert r2.status_code == 404 and unversioned == "1"


def test_polling_applies_config_changes_and_removals(registry_copy: Path, tmp_path: Path) -> None:
    with run_server(registry_copy, tmp_path, "--poll", "0.2", "--no-strict-readiness") as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        assert c.get("/v2/models/iris/config").json()["max_batch_size"] == 64
        toml = registry_copy / "iris" / "model.toml"
        toml.write_text(toml.read_text().replace("max_batch_size = 64", "max_batch_size = 8"))
        wait_for(lambda: c.get("/v2/models/iris/config").json()["max_batch_size"] == 8)
        assert c.post("/v2/models/iris/infer", content=GOOD).status_code == 200

        toml.write_text(toml.read_text().replace("[batching]", "[batching]\nbogus = 1"))
        # a broken config is reported, and the old one keeps serving
        wait_for(lambda: "invalid model.toml" in s.log())
        assert c.post("/v2/models/iris/infer", content=GOOD).status_code == 200

        shutil.rmtree(registry_copy / "diabetes")
        wait_for(lambda: c.get("/v2/models/diabetes/ready").status_code == 503)
        r = c.post("/v1/models/diabetes:predict", content=b'{"instances": [[0,0,0,0,0,0,0,0,0,0]]}')
        assert r.status_code == 503


def test_unloading_under_load_never_fails_a_request_with_a_500(
    registry_copy: Path, tmp_path: Path
) -> None:
    """Requests already answered by a version that is unloaded before they are encoded still
    get their answer (or a clean 404/503 when they arrive after it); never a 500 because the
    version's session was released under them."""
    for other in ("forest", "digits", "alltypes"):
        shutil.rmtree(registry_copy / other)
    with run_server(registry_copy, tmp_path, "--admin-open") as s, \
            httpx.Client(base_url=s.url, timeout=10) as c, \
            Load(s.url) as load:
        wait_for(lambda: load.seen("1") > 50)
        for _ in range(30):
            assert c.post("/v2/repository/models/iris/unload").status_code == 200
            assert c.post("/v2/repository/models/iris/load").status_code == 200
            before = load.seen("1")
            wait_for(lambda before=before: load.seen("1") > before + 5)
    assert set(load.statuses) <= {200, 404, 503}, (load.statuses, load.errors[:3])
    assert not any("internal error" in e for e in load.errors), load.errors[:3]


def test_polling_logs_a_new_model_as_new(registry_copy: Path, tmp_path: Path) -> None:
    spare = tmp_path / "digits"
    shutil.move(registry_copy / "digits", spare)
    with run_server(registry_copy, tmp_path, "--poll", "0.2") as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        incoming = registry_copy / ".incoming"  # not a model name: the registry ignores it
        shutil.copytree(spare, incoming)
        incoming.rename(registry_copy / "digits")  # the model appears whole
        wait_for(lambda: "new model digits in the registry: loading" in s.log())
        wait_for(lambda: c.get("/v2/models/digits/ready").status_code == 200)
        log = s.log()
    assert "registry changed for model digits" not in log
    assert "registry changed for model" not in log  # nothing else changed either
