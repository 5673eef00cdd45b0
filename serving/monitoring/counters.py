"""The plain counters the request path bumps: histograms, per-request, per-batch, per-phase and
shadow figures.

Everything here is updated on the event loop thread only (no locks, no label lookups): recording
a request costs well under a microsecond. The counters of one event move together, in one method
call with no await inside, so whatever reads them on the loop (a scrape, Triton's statistics
route, the rollout controller) sees each request or batch either whole or not at all.
`serving.monitoring.metrics` turns them into Prometheus families when `/metrics` is scraped.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import dataclass, field

# Seconds: sub-millisecond to multi-second.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Histogram:
    """A histogram owned by one thread: counts per bucket and a sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family_buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs, as prometheus_client's HistogramMetricFamily takes."""
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            acc += n
            out.append((_le(bound), acc))
        out.append(("+Inf", acc + self.counts[-1]))
        return out

    def add(self, other: Histogram) -> None:
        """Add another histogram of the same buckets into this one (for a merged view)."""
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.total += other.total


def _le(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() and bound >= 1 else repr(float(bound))


class RequestStats:
    """Per (model, version, route): outcomes, end-to-end latency, and where successful requests
    spent their time (Triton's per-request statistics: one success adds to all of them)."""

    __slots__ = (
        "decode", "encode", "fail_seconds", "latency", "outcomes", "queue_seconds",
        "run_seconds", "success_seconds",
    )

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.success_seconds = 0.0
        self.fail_seconds = 0.0
        self.queue_seconds = 0.0  # summed over successful requests, as run_seconds
        self.run_seconds = 0.0  # the request's batch's ONNX Runtime time
        # decoding and encoding of successful requests: the phase histograms and Triton's
        # compute_input/compute_output (their totals) read these
        self.decode = Histogram(LATENCY_BUCKETS)
        self.encode = Histogram(LATENCY_BUCKETS)

    def add(self, outcome: str, seconds: float) -> None:
        """One finished request that did not succeed (or whose phases are unknown)."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.latency.observe(seconds)
        if outcome == "success":
            self.success_seconds += seconds
        else:
            self.fail_seconds += seconds

    def add_success(
        self, seconds: float, decode_s: float, queue_s: float, run_s: float, encode_s: float
    ) -> None:
        """One successful request and its phases, in one step (the histogram update is
        inlined: this runs once per request)."""
        outcomes = self.outcomes
        outcomes["success"] = outcomes.get("success", 0) + 1
        lat = self.latency
        lat.counts[bisect_left(lat.bounds, seconds)] += 1
        lat.total += seconds
        self.success_seconds += seconds
        self.queue_seconds += queue_s
        self.run_seconds += run_s
        d, e = self.decode, self.encode
        d.counts[bisect_left(d.bounds, decode_s)] += 1
        d.total += decode_s
        e.counts[bisect_left(e.bounds, encode_s)] += 1
        e.total += encode_s


@dataclass
class BatchStats:
    """Per model version, for the life of the process: what its batcher ran. Owned by the
    version's Model and handed to each Scheduler that serves the version, so a reload (a new
    Scheduler) never resets them."""

    batch_sizes: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    queue_time: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    run_time: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    requests: int = 0
    last_at: float = 0.0  # wall-clock time of the last successful batch
    batches: int = 0  # every batch run, failed ones too
    rows: int = 0
    run_seconds: float = 0.0
    failed_batches: int = 0
    rejected: dict[str, int] | None = None
    # Successful executions by batch size (rows): [count, ONNX Runtime seconds]. Triton's
    # execution_count and inference_count are sums over it, so they always agree with it.
    by_size: dict[int, list[float]] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        if self.rejected is None:
            self.rejected = {}
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def executed(self, rows: int, run_s: float) -> None:
        """One successful batch of `rows` rows (its requests' queue times are added by the
        caller, as it resolves each request)."""
        self.last_at = time.time()
        self.run_time.observe(run_s)
        entry = self.by_size.get(rows)
        if entry is None:
            entry = self.by_size[rows] = [0, 0.0]
        entry[0] += 1
        entry[1] += run_s


class ShadowStats:
    """Per (model, shadow version): what mirroring found. A copy counts as mirrored when its
    answer (or failure) comes back, in the same step as `compared` or `errors`, so any window
    between two readings has compared + errors == mirrored."""

    __slots__ = (
        "abs_diff_max", "abs_diff_sum", "compared", "disagreements", "errors", "label_rows",
        "mirrored", "primary_latency", "shadow_latency", "shed", "values",
    )

    def __init__(self) -> None:
        self.mirrored = 0  # copies whose run finished (compared or errors)
        self.compared = 0  # pairs of answers compared
        self.label_rows = 0  # rows with a label (integer/string) output compared
        self.disagreements = 0  # of those, rows whose labels differ
        self.values = 0  # numeric output values compared
        self.abs_diff_sum = 0.0
        self.abs_diff_max = 0.0
        self.errors = 0  # the shadow failed or timed out (never shown to the client)
        self.shed = 0  # not mirrored: the shadow's queue was busy (shadow work goes first)
        self.primary_latency = Histogram(LATENCY_BUCKETS)  # queue + run, primary
        self.shadow_latency = Histogram(LATENCY_BUCKETS)  # queue + run, shadow


class CounterStore:
    """The per-request counters of one process, keyed by model and version; they live as long
    as the process (the batch counters live with each Model)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], RequestStats] = {}
        self.shadows: dict[tuple[str, str], ShadowStats] = {}
        # (model, protocol, outcome) -> requests: the one counter with a protocol label
        self.protocols: dict[tuple[str, str, str], int] = {}

    def request_stats(self, model: str, version: str, route: str) -> RequestStats:
        key = (model, version, route)
        stats = self.requests.get(key)
        if stats is None:
            stats = self.requests[key] = RequestStats()
        return stats

    def shadow_stats(self, model: str, version: str) -> ShadowStats:
        stats = self.shadows.get((model, version))
        if stats is None:
            stats = self.shadows[(model, version)] = ShadowStats()
        return stats
