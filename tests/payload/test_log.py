"""The payload log without a server: sampling, the bounded buffer, segments, the store."""

from __future__ import annotations

import asyncio
import gzip
import time
from pathlib import Path

import numpy as np
import orjson

from serving.logging_config import LoggingConfig
from serving.model_config import ModelConfig
from serving.payload.archive import find_logged
from serving.payload.block import CAPACITY
from serving.payload.log import PayloadLog
from serving.types import Tensor


def cfg(**kw: object) -> ModelConfig:
    return ModelConfig(logging=LoggingConfig(**kw))  # type: ignore[arg-type]


def row(i: int) -> list[Tensor]:
    return [Tensor("input", "FP32", (1, 2), np.array([i, i + 0.5], np.float32))]


def out(i: int) -> dict[str, np.ndarray]:
    return {"label": np.array([i % 3], np.int64)}


def test_sampling_keys_and_overrides() -> None:
    log = PayloadLog()
    assert log.decide(cfg(), "a", None) is None  # off by default
    every = cfg(sample=1.0)
    assert log.decide(every, "a", None) == "a"
    generated = {log.decide(every, None, None) for _ in range(100)}
    assert len(generated) == 100 and all(isinstance(g, str) and g for g in generated)
    keyed = cfg(routing_keys=("vip",))
    assert log.decide(keyed, "a", "vip") == "a" and log.decide(keyed, "a", "other") is None
    some = cfg(sample=0.1)
    hits = sum(log.decide(some, "a", None) is not None for _ in range(20_000))
    assert 1_500 < hits < 2_500
    assert PayloadLog(sample=0.0).decide(every, "a", None) is None  # the server's override
    assert PayloadLog(sample=1.0).decide(cfg(), "a", None) == "a"


def test_a_full_buffer_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    log = PayloadLog(buffer=10)
    c = cfg(sample=1.0, sink=str(tmp_path), segment_records=1000)
    for i in range(25):
        log.capture(f"r{i}", "m", "1", "primary", row(i), out(i), 0.001, c)
    assert log.buffered == 10 and log.dropped["buffer_full"] == 15
    log.drain(force=True)  # the writer's pass, here on this thread
    [segment] = (tmp_path / "m").glob("part-*.jsonl.gz")
    records = [orjson.loads(line) for line in gzip.decompress(segment.read_bytes()).splitlines()]
    assert [r["id"] for r in records] == [f"r{i}" for i in range(15, 25)]  # the newest kept
    assert records[0]["inputs"] == {"input": [[15.0, 15.5]]}
    assert records[0]["outputs"] == {"label": [0]} and records[0]["route"] == "primary"
    assert log.written == 10 and not list(tmp_path.rglob("*.tmp"))


def test_segments_rotate_by_records_and_are_read_back(tmp_path: Path) -> None:
    log = PayloadLog(seal_s=0.0)  # each pass seals what is open
    c = cfg(sample=1.0, sink=str(tmp_path), segment_records=4)
    for i in range(10):
        log.capture(f"r{i}", "m", "1", "primary", row(i), out(i), 0.001, c)
        log.drain()
    assert len(list((tmp_path / "m").glob("*.jsonl.gz"))) == 2  # 4 + 4; 2 still open
    log.drain(force=True)
    assert len(list((tmp_path / "m").glob("*.jsonl.gz"))) == 3
    found = find_logged([str(tmp_path)], "m", {"r1", "r9", "missing"})
    assert set(found) == {"r1", "r9"}
    assert found["r9"][0].kind == "class" and found["r9"][0].values.tolist() == [0]


def test_the_store_of_recent_predictions_is_bounded_and_keeps_shadows() -> None:
    log = PayloadLog()
    c = cfg(sample=1.0, recent=3)
    for i in range(5):
        log.capture(f"r{i}", "m", "1", "primary", row(i), out(i), 0.001, c)
    log.capture("r4", "m", "2", "shadow", {"input": np.zeros((1, 2))}, out(1), 0.001, c)
    answers = log.answers("m", "r4") or ()
    assert [(a.version, a.route, a.values.tolist()) for a in answers] == [  # type: ignore[union-attr]
        ("1", "primary", [1]), ("2", "shadow", [1])]
    assert log.answers("m", "nobody") is None
    log.capture("r2", "m", "1", "primary", row(7), out(7), 0.001, c)  # a reused id: the newest
    assert (log.answers("m", "r2") or ())[0].values.tolist() == [1]  # type: ignore[union-attr]
    assert log.logged == {("m", "1", "primary"): 6, ("m", "2", "shadow"): 1}
    assert log.buffered == 0  # no sink: kept for feedback only
    # bounded: the oldest blocks go as a block opens, while the newer ones hold `recent`
    for i in range(3 * CAPACITY):
        log.capture(f"s{i}", "m", "1", "primary", row(i), out(i), 0.001, c)
    assert log.answers("m", "r0") is None and log.answers("m", "r4") is None
    assert log.answers("m", f"s{3 * CAPACITY - 1}") is not None
    kept = len(log._stores["m"])
    assert 3 <= kept <= 3 + 2 * CAPACITY  # checked as each block opens


def test_the_logging_table_is_validated() -> None:
    import pytest

    from serving.config import ServerConfig

    doc = {"logging": {"sample": 0.5, "routing_keys": ["a", "b"], "sink": "s3://b/p"}}
    got = ModelConfig.from_toml(doc).logging
    assert (got.sample, got.routing_keys, got.sink) == (0.5, ("a", "b"), "s3://b/p")
    for bad in ({"sample": 2}, {"segment_s": 0}, {"quality_window": 0}, {"colour": 1}):
        with pytest.raises(ValueError):
            ModelConfig.from_toml({"logging": bad})
    with pytest.raises(ValueError, match="payload_sample"):
        ServerConfig(payload_sample=1.5)


def test_the_buffer_is_bounded_in_bytes_too(tmp_path: Path) -> None:
    # 32 rows of 64 float64 values and one output: 16 kB and 8 bytes a record
    log = PayloadLog(buffer=1000, buffer_bytes=50_000)
    c = cfg(sample=1.0, sink=str(tmp_path), segment_records=1000)
    for i in range(10):
        log.capture(f"r{i}", "m", "1", "primary", {"input": np.full((32, 64), float(i))},
                    out(i), 0.001, c)
    assert log.buffered == 3 and log.dropped["buffer_full"] == 7  # 3 x 16,392 <= 50,000
    # strings count 64 bytes an element, not the 8 of their pointers: 136 bytes a record
    strings = PayloadLog(buffer=1000, buffer_bytes=300)
    for i in range(4):
        strings.capture(f"s{i}", "m", "1", "primary", {"s": np.array(["a", "b"], dtype=object)},
                        out(i), 0.001, c)
    assert strings.buffered == 2 and strings.dropped["buffer_full"] == 2
    big = {"input": np.zeros((100, 100))}  # alone over the bound: kept, and nothing else
    log.capture("big", "m", "1", "primary", big, out(0), 0.001, c)
    assert log.buffered == 1 and log.dropped["buffer_full"] == 10
    log.drain(force=True)
    [segment] = (tmp_path / "m").glob("part-*.jsonl.gz")
    ids = [orjson.loads(line)["id"] for line in gzip.decompress(segment.read_bytes()).splitlines()]
    assert ids == ["big"] and log.buffered == 0
    log.capture("next", "m", "1", "primary", row(1), out(1), 0.001, c)  # the bound was reset
    assert log.buffered == 1 and log.dropped["buffer_full"] == 10


def test_a_late_lookup_finds_the_primary_behind_a_newer_shadow(tmp_path: Path) -> None:
    log = PayloadLog(seal_s=0.0)  # each pass seals what is open
    c = cfg(sample=1.0, sink=str(tmp_path), segment_records=2)
    log.capture("r1", "m", "1", "primary", row(1), out(1), 0.001, c)
    log.capture("r2", "m", "1", "primary", row(2), out(2), 0.001, c)
    log.drain()  # the older segment: r1's primary answer
    log.capture("r1", "m", "2", "shadow", {"input": np.zeros((1, 2))}, out(2), 0.001, c)
    log.capture("r3", "m", "1", "primary", row(3), out(3), 0.001, c)
    log.drain(force=True)  # the newer one: r1's shadow answer
    assert len(list((tmp_path / "m").glob("*.jsonl.gz"))) == 2
    found = find_logged([str(tmp_path)], "m", {"r1"})
    assert [(a.version, a.route) for a in found["r1"]] == [("1", "primary"), ("2", "shadow")]


def test_answers_from_open_and_sealed_blocks_agree(tmp_path: Path) -> None:
    log = PayloadLog(seal_s=0.0)  # each pass seals what is open
    c = cfg(sample=1.0, sink=str(tmp_path), recent=100)
    for i in range(6):
        rows = 1 + i % 2  # one or two rows a request
        log.capture(f"r{i}", "m", "1", "primary", {"input": np.full((rows, 2), float(i))},
                    {"label": np.arange(i, i + rows), "p": np.full((rows, 3), 0.5, np.float32)},
                    0.001, c)
        log.capture(f"r{i}", "reg", "1", "primary", {"input": np.full((rows, 2), float(i))},
                    {"value": np.full((rows, 1), i / 2, np.float32)}, 0.001, c)
    def got() -> list[tuple[str, list[float]]]:
        return [(a.kind, a.values.tolist()) for m in ("m", "reg") for i in range(6)  # type: ignore[union-attr]
                for a in log.answers(m, f"r{i}") or ()]
    open_blocks = got()
    log.drain()  # sealed now: answered from each block's prediction of every row
    assert got() == open_blocks
    assert open_blocks[:3] == [("class", [0]), ("class", [1, 2]), ("class", [2])]
    assert open_blocks[7] == ("value", [0.5, 0.5])


def test_a_store_of_one_record_blocks_stays_bounded(tmp_path: Path) -> None:
    # at a low sampling rate each writer pass seals a block of a few records
    log = PayloadLog(seal_s=0.0)  # each pass seals what is open
    c = cfg(sample=1.0, sink=str(tmp_path), recent=5)
    for i in range(40):
        log.capture(f"r{i}", "m", "1", "primary", row(i), out(i), 0.001, c)
        log.capture(f"r{i}", "m", "2", "shadow", row(i), out(i + 1), 0.001, c)
        log.drain()
    assert 5 <= sum(len(b) for b in log._stores["m"]._blocks if b.route != "shadow") <= 6
    assert [a.route for a in log.answers("m", "r39") or ()] == ["primary", "shadow"]
    assert log.answers("m", "r30") is None


def test_a_small_block_waits_for_more_records_or_its_age(tmp_path: Path) -> None:
    log = PayloadLog(seal_s=0.2)
    c = cfg(sample=1.0, sink=str(tmp_path), segment_records=1)
    log.capture("r0", "m", "1", "primary", row(0), out(0), 0.001, c)
    log.drain()
    assert log.written == 0 and log.buffered == 1  # one record: it waits
    for i in range(1, 64):
        log.capture(f"r{i}", "m", "1", "primary", row(i), out(i), 0.001, c)
    log.drain()
    assert log.written == 64 and log.buffered == 0  # 64 records: written at once
    log.capture("late", "m", "1", "primary", row(0), out(0), 0.001, c)
    time.sleep(0.25)
    log.drain()
    assert log.written == 65  # old enough


def test_a_request_the_log_cannot_copy_is_counted_not_raised(tmp_path: Path) -> None:
    log = PayloadLog()
    c = cfg(sample=1.0, sink=str(tmp_path))
    log.capture("bad", "m", "1", "primary", row(0), {"label": [1]}, 0.001, c)  # type: ignore[dict-item]
    assert log.dropped["capture_error"] == 1 and log.buffered == 0
    log.capture("good", "m", "1", "primary", row(1), out(1), 0.001, c)
    assert log.buffered == 1 and log.answers("m", "good") is not None


def test_on_a_loop_a_pass_captures_are_taken_at_the_next_pass(tmp_path: Path) -> None:
    """On a running loop a capture is queued, and the loop's next pass takes every record the
    pass before queued, in order, copying their tensors (the caller's own again after it).
    What a loop left queued when it stopped, stop() takes."""
    c = cfg(sample=1.0, sink=str(tmp_path), segment_records=1000)
    log = PayloadLog(tick_s=60)  # no pass of the writer's but stop()'s
    log.start()

    async def one_pass() -> tuple[int, int]:
        x = np.array([[1.0, 2.0]], np.float32)
        for i in range(3):
            log.capture(f"r{i}", "m", "1", "primary", {"input": x}, out(i), 0.001, c, 1)
        queued = sum(log.logged.values())
        await asyncio.sleep(0)  # the next pass
        x[:] = -1
        return queued, sum(log.logged.values())

    assert asyncio.run(one_pass()) == (0, 3)

    async def left_queued() -> None:
        log.capture("r3", "m", "1", "primary", row(3), out(3), 0.001, c)

    asyncio.run(left_queued())  # the loop ends with the capture's pass still to come
    log.stop()
    [segment] = (tmp_path / "m").glob("part-*.jsonl.gz")
    records = [orjson.loads(line) for line in gzip.decompress(segment.read_bytes()).splitlines()]
    assert [r["id"] for r in records] == ["r0", "r1", "r2", "r3"]
    assert records[0]["inputs"] == {"input": [[1.0, 2.0]]}
    assert log.dropped == {"buffer_full": 0, "sink_error": 0, "encode_error": 0,
                           "capture_error": 0}
