"""The feedback route's work without a server: joining from memory, the loop-time budget."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest

from serving.errors import Overloaded
from serving.logging_config import LoggingConfig
from serving.model_config import ModelConfig
from serving.payload import desk as desk_module
from serving.payload.desk import FeedbackDesk
from serving.payload.log import PayloadLog
from serving.types import Tensor

CFG = ModelConfig(logging=LoggingConfig(sample=1.0))


def desk_with(n: int) -> FeedbackDesk:
    log = PayloadLog()
    for i in range(n):
        log.capture(f"r{i}", "m", "1", "primary",
                    [Tensor("input", "FP32", (1, 2), np.zeros(2, np.float32))],
                    {"label": np.array([i % 2])}, 0.001, CFG)
    return FeedbackDesk(log, lambda _m, _v: (), lambda _m: CFG)


def batch(ids: range) -> bytes:
    return orjson.dumps({"feedback": [{"id": f"r{i}", "truth": 0} for i in ids]})


def test_a_batch_is_joined_in_slices_and_counted() -> None:
    d = desk_with(600)
    doc = asyncio.run(d.receive("m", batch(range(600))))
    assert (doc["accepted"], doc["duplicate"]) == (600, 0)
    q = d.book.quality[("m", "1", "primary")]
    assert (q.rows, q.correct) == (600, 300)
    again = asyncio.run(d.receive("m", batch(range(10))))
    assert again["duplicate"] == 10 and len(again["duplicate_ids"]) == 10


def test_feedback_past_its_share_of_the_loop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    d = desk_with(600)
    monkeypatch.setattr(desk_module, "LOOP_SHARE", 1e-9)  # any work uses it up

    async def twice() -> None:
        await d.receive("m", batch(range(300)))
        with pytest.raises(Overloaded, match="share"):
            await d.receive("m", batch(range(300, 600)))

    asyncio.run(twice())
    assert d.book.quality[("m", "1", "primary")].rows == 300
