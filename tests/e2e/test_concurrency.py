"""Many concurrent requests with distinct inputs each get their own answer (batches split right)."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import orjson

from tests.e2e.reference import estimator


def test_200_concurrent_requests_get_their_own_answers(server) -> None:
    est, x_all = estimator("digits")
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(x_all), size=200)
    rows = [int(r) for r in rng.integers(1, 4, size=200)]  # 1..3 rows per request

    async def one(c: httpx.AsyncClient, i: int) -> tuple[int, list[int], list[float], int]:
        x = x_all[picks[i] : picks[i] + 1].repeat(rows[i], axis=0)
        x = x + np.float32(i * 1e-3)  # distinct inputs
        body = orjson.dumps({"id": str(i), "inputs": [
            {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.tolist()}]})
        r = await c.post("/v2/models/digits/infer", content=body)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["id"] == str(i)
        out = {o["name"]: o["data"] for o in doc["outputs"]}
        return i, out["label"], out["probabilities"], doc["parameters"]["batch_size"]

    async def main() -> list[tuple[int, list[int], list[float], int]]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as c:
            return await asyncio.gather(*(one(c, i) for i in range(200)))

    results = asyncio.run(main())
    batch_sizes = []
    for i, labels, proba, batch_size in results:
        x = x_all[picks[i] : picks[i] + 1].repeat(rows[i], axis=0) + np.float32(i * 1e-3)
        assert labels == est.predict(x).tolist()
        np.testing.assert_allclose(np.reshape(proba, (rows[i], 10)), est.predict_proba(x),
                                   atol=1e-5)
        batch_sizes.append(batch_size)
    assert max(batch_sizes) > 3  # concurrent requests really were batched together
