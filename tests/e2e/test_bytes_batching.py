"""Concurrent requests with string (BYTES) inputs share batches and each get their own strings."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

pytestmark = pytest.mark.e2e

REQUESTS = 64


def _request(i: int) -> dict[str, object]:
    # `alltypes` takes one [N, 2] input of every datatype (Identity each): BYTES beside numbers.
    inputs = [{"name": "x_BYTES", "datatype": "BYTES", "shape": [1, 2],
               "data": [f"req {i}", "é" * (i % 5)]}]
    numeric = {"BOOL": [True, False], "FP16": [0.5, 1.0], "FP32": [float(i), 1.0],
               "FP64": [float(i), 2.0]}
    for dt in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"):
        numeric[dt] = [i % 100, 1]
    for dt, data in numeric.items():
        inputs.append({"name": f"x_{dt}", "datatype": dt, "shape": [1, 2], "data": data})
    return {"id": str(i), "inputs": inputs}


def test_concurrent_string_requests_each_get_their_own_strings(server) -> None:
    async def one(c: httpx.AsyncClient, i: int) -> tuple[list[str], int]:
        r = await c.post("/v2/models/alltypes/infer", content=orjson.dumps(_request(i)))
        assert r.status_code == 200, r.text
        doc = r.json()
        out = {o["name"]: o["data"] for o in doc["outputs"]}
        assert out["y_FP32"] == [float(i), 1.0]
        return out["y_BYTES"], doc["parameters"]["batch_size"]

    async def all_at_once() -> list[tuple[list[str], int]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                     limits=httpx.Limits(max_connections=REQUESTS)) as c:
            return list(await asyncio.gather(*(one(c, i) for i in range(REQUESTS))))

    results = asyncio.run(all_at_once())
    for i, (strings, _batch) in enumerate(results):
        assert strings == [f"req {i}", "é" * (i % 5)]
    assert max(batch for _, batch in results) > 1, "no two requests shared a batch"
