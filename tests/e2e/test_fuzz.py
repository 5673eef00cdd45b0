"""Every documented route, fuzzed from the OpenAPI document the server serves (schemathesis):
no 500, no undocumented status, every 4xx a JSON {"error": ...}; afterwards the server is alive
and answers a real inference as ONNX Runtime does."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import RunningServer, copy_registry, run_server, wait_until_ready

pytestmark = pytest.mark.e2e

TOKEN = "fuzz-admin-token"
# per operation, mode and path-parameter choice: about 10 s on an idle machine; raise it
# (SERVING_FUZZ_EXAMPLES=200) for a deeper search
EXAMPLES = int(os.environ.get("SERVING_FUZZ_EXAMPLES", "6"))
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def fuzzed(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server of its own (the fuzzer unloads models and starts rollouts), with an admin token
    so that the write endpoints are exercised rather than refused."""
    tmp = tmp_path_factory.mktemp("fuzz")
    registry = copy_registry(models_dir, tmp / "registry")
    with run_server(registry, tmp, "--admin-token", TOKEN) as server:
        yield server


def _problem(op: Any, response: Any) -> str | None:
    """What is wrong with one answer, or None."""
    status = response.status_code
    documented = op.definition.raw["responses"]
    if status >= 500 and status != 503 and str(status) not in documented:
        return f"{status} (server error)"
    if str(status) not in documented and not (status in (404, 405) and op.path_parameters):
        return f"{status} is not documented for this operation"
    if 400 <= status < 500:
        try:
            body = json.loads(response.content)
        except ValueError:
            return f"{status} without a JSON body: {response.content[:200]!r}"
        if not isinstance(body, dict) or not isinstance(body.get("error"), str):
            return f"{status} without an 'error' string: {response.content[:200]!r}"
    return None


def _fuzz(op: Any, url: str, mode: GenerationMode, fixed: dict[str, str] | None,
          problems: list[str]) -> None:
    names = {p.name for p in op.path_parameters}
    if fixed is not None and not names & set(fixed):
        return  # nothing to fix: the unfixed pass covered it
    fixed = {k: v for k, v in (fixed or {}).items() if k in names} or None

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode, path_parameters=fixed))
    def run(case: Any) -> None:
        response = case.call(base_url=url, headers=AUTH, timeout=30)
        problem = _problem(op, response)
        if problem:
            problems.append(f"{op.label} [{mode.value}]: {problem}\n  {case.as_curl_command()}")

    try:
        run()
    except Unsatisfiable:  # negative mode on an operation without inputs: nothing to break
        assert mode is GenerationMode.NEGATIVE, op.label


def test_fuzz_every_route(fuzzed: RunningServer) -> None:
    doc = httpx.get(f"{fuzzed.url}/v2/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(doc)
    problems: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 29
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for fixed in (None, {"model": "iris", "version": "1"}):
                _fuzz(op, fuzzed.url, mode, fixed, problems)
    assert fuzzed.proc.poll() is None, fuzzed.log()[-3000:]
    assert not problems, "\n".join(problems[:20])
    # Alive, and right: put iris back as it was, then infer and compare with ONNX Runtime.
    with httpx.Client(base_url=fuzzed.url, headers=AUTH, timeout=30) as c:
        c.post("/v2/models/iris/rollout/abort")
        assert c.post("/v2/repository/models/iris/load").status_code == 200
        wait_until_ready(fuzzed.url, "/v2/models/iris/versions/1/ready")
        x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], np.float32)
        r = c.post("/v2/models/iris/versions/1/infer", json={"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [2, 4], "data": x.ravel().tolist()}]})
        assert r.status_code == 200, r.text
    outputs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    model = fuzzed_registry(fuzzed) / "iris/1/model.onnx"
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    label, probabilities = sess.run(["label", "probabilities"], {"input": x})
    assert outputs["label"] == label.tolist() == [0, 2]
    np.testing.assert_allclose(outputs["probabilities"], probabilities.ravel(), rtol=1e-6)


def fuzzed_registry(server: RunningServer) -> Path:
    cmd = server.proc.args
    assert isinstance(cmd, list)
    return Path(cmd[cmd.index("--registry") + 1])
