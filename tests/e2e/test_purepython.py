"""The server on the pure-Python twins (SERVING_PUREPYTHON=1): same answers, batching included."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import orjson

from tests.conftest import run_server
from tests.e2e.reference import estimator


def test_server_on_the_twins_batches_and_answers_right(models_dir, tmp_path) -> None:
    est, x_all = estimator("iris")
    x = x_all[::3]

    async def main(url: str) -> list[dict]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            async def one(i: int) -> dict:
                body = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                                 "shape": [1, 4], "data": x[i].tolist()}]})
                r = await c.post("/v2/models/iris/infer", content=body)
                assert r.status_code == 200, r.text
                return r.json()
            return await asyncio.gather(*(one(i) for i in range(len(x))))

    with run_server(models_dir, tmp_path, env={"SERVING_PUREPYTHON": "1"}) as s:
        docs = asyncio.run(main(s.url))
        big = x_all[:64].tolist()  # a large body takes the split/decode path
        r = httpx.post(f"{s.url}/v2/models/iris/infer", content=orjson.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [64, 4], "data": big}]}))
    labels = [d["outputs"][0]["data"][0] for d in docs]
    assert labels == est.predict(x).tolist()
    assert max(d["parameters"]["batch_size"] for d in docs) > 1
    assert r.status_code == 200
    np.testing.assert_array_equal(r.json()["outputs"][0]["data"], est.predict(x_all[:64]))
