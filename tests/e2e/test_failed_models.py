"""A model that fails to load is reported failed with its reason; the others serve normally."""

from __future__ import annotations

import signal

import httpx
import orjson

from serving.registry.manifest import read_manifest, write_manifest
from tests.conftest import run_server, wait_until_ready

GOOD = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                 "data": [5.1, 3.5, 1.4, 0.2]}]})


def test_corrupt_file_and_checksum_mismatch(registry_copy, tmp_path) -> None:
    # forest: the file is garbage and its manifest checksum matches the garbage (so ORT fails).
    import hashlib
    from dataclasses import replace

    bad = b"this is not an onnx model"
    (registry_copy / "forest/1/model.onnx").write_bytes(bad)
    m = read_manifest(registry_copy / "forest/1/manifest.json")
    write_manifest(registry_copy / "forest/1/manifest.json",
                   replace(m, sha256=hashlib.sha256(bad).hexdigest()))
    # digits: one byte flipped, manifest untouched -> checksum mismatch.
    p = registry_copy / "digits/1/model.onnx"
    data = bytearray(p.read_bytes())
    data[100] ^= 0xFF
    p.write_bytes(bytes(data))

    with run_server(registry_copy, tmp_path, wait_ready=False) as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        wait_until_ready(s.url, "/v2/models/iris/ready")
        wait_until_ready(s.url, "/v2/models/diabetes/ready")
        # strict readiness: the server says not ready while a model it should serve failed
        assert c.get("/v2/health/ready").status_code == 503
        assert c.get("/v2/health/live").status_code == 200

        meta = c.get("/v2/models/forest").json()
        assert meta["state"] == "FAILED"
        assert "ONNX Runtime cannot load the model" in meta["reason"]
        meta = c.get("/v2/models/digits").json()
        assert meta["state"] == "FAILED"
        assert "checksum mismatch" in meta["reason"]
        assert c.get("/v2/models/digits/ready").status_code == 503

        r = c.post("/v2/models/digits/infer", content=GOOD)
        assert r.status_code == 503
        assert "checksum mismatch" in r.json()["error"]
        r = c.post("/v2/models/iris/infer", content=GOOD)
        assert r.status_code == 200
        assert "checksum mismatch" in s.log()


def test_a_model_whose_loading_raises_fails_alone_and_recovers(registry_copy, tmp_path) -> None:
    """Reading alltypes' routing state raises (a directory where its file should be, as an
    unreadable file would): that model is FAILED with the reason, the others load, readiness says
    which model is missing (it is the first one loaded: loading at start used to end there, and
    readiness said "models are loading" for ever), and a poll loads it once the fault is gone."""
    state = registry_copy / "_state" / "alltypes.json"
    state.mkdir(parents=True)
    with run_server(registry_copy, tmp_path, "--poll", "0.2", wait_ready=False) as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        wait_until_ready(s.url, "/v2/models/iris/ready", timeout=30)
        wait_until_ready(s.url, "/v2/models/forest/ready", timeout=30)
        r = c.get("/v2/health/ready")
        assert r.status_code == 503
        assert r.json()["reason"].startswith("model alltypes has no ready version")
        assert "Is a directory" in r.json()["reason"]
        meta = c.get("/v2/models/alltypes").json()
        assert meta["state"] == "FAILED" and "Is a directory" in meta["reason"]
        index = c.post("/v2/repository/index").json()
        assert [e["state"] for e in index if e["name"] == "alltypes"] == ["FAILED"]
        assert "model alltypes could not be loaded" in s.log()
        state.rmdir()
        wait_until_ready(s.url, timeout=30)  # the poll tried again, and it loaded
        assert c.get("/v2/models/alltypes/ready").status_code == 200


def test_lenient_readiness_and_sigterm_exit(registry_copy, tmp_path) -> None:
    (registry_copy / "forest/1/model.onnx").write_bytes(b"garbage")
    with run_server(registry_copy, tmp_path, "--no-strict-readiness") as s:
        with httpx.Client(base_url=s.url, timeout=10) as c:
            assert c.get("/v2/health/ready").json() == {"ready": True}
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(30) == 0
