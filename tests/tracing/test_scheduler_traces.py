"""The scheduler stamps sampled requests with the batch they ran in (tracing on)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from serving import tracing
from serving.batching.scheduler import Scheduler
from serving.tracing.export import build_tracer
from tests.batching.test_scheduler import FakeSession, policy, rows


@pytest.fixture
def tracer() -> Iterator[tracing.Tracer]:
    t = build_tracer({}, SimpleSpanProcessor(InMemorySpanExporter()))
    tracing.activate(t)
    yield t
    tracing.activate(None)


def test_sampled_requests_sharing_a_batch_share_its_trace(tracer: tracing.Tracer) -> None:
    async def scenario() -> None:
        sched = Scheduler(FakeSession(), policy(max_queue_delay_us=50_000, max_batch_size=3),
                          "m:1")
        try:
            traces = [tracer.start_request([], "m", None, "http") for _ in range(2)]
            futures = [sched.submit(rows(1.0), 1, trace=t) for t in traces]
            futures.append(sched.submit(rows(2.0), 1))  # not sampled: no trace
            results = await asyncio.gather(*futures)
            assert [r[1] for r in results] == [3, 3, 3]
            batches = {id(t.batch) for t in traces if t is not None}
            assert len(batches) == 1
            batch = traces[0].batch  # type: ignore[union-attr]
            assert batch is not None and (batch.rows, batch.requests) == (3, 3)
            assert batch.members == traces and batch.error is None
            assert batch.started <= batch.ended
            assert all(t is not None and 0 < t.enqueued <= batch.started for t in traces)
        finally:
            sched.close()

    asyncio.run(scenario())
