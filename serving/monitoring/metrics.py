"""Every metric the server exports, defined here and nowhere else.

The request path only bumps plain Python counters on the event loop thread (no locks, no label
lookups in prometheus_client); `ServingCollector` turns them into metric families when
Prometheus scrapes `/metrics`. Recording a request costs well under a microsecond.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from serving.registry.rollout_state import RolloutState, delivery_summary

if TYPE_CHECKING:
    from serving.lifecycle.manager import ModelManager
    from serving.routing.shadow import ShadowStats

# Seconds: sub-millisecond to multi-second.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
UNKNOWN_MODEL = "_unknown"  # unknown names share one label value: clients can't add series


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
        out, acc = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            acc += n
            out.append((_le(bound), acc))
        out.append(("+Inf", acc + self.counts[-1]))
        return out


def _le(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() and bound >= 1 else repr(float(bound))


class RequestStats:
    """Per (model, version, route): outcomes and end-to-end latency."""

    __slots__ = ("fail_seconds", "latency", "outcomes", "success_seconds")

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.success_seconds = 0.0
        self.fail_seconds = 0.0


class PhaseStats:
    """Per (model, version): time spent decoding and encoding (queue and inference are the
    scheduler's)."""

    __slots__ = ("decode", "encode")

    def __init__(self) -> None:
        self.decode = Histogram(LATENCY_BUCKETS)
        self.encode = Histogram(LATENCY_BUCKETS)

    def observe(self, decode_s: float, encode_s: float) -> None:
        d, e = self.decode, self.encode
        d.counts[bisect_left(d.bounds, decode_s)] += 1
        d.total += decode_s
        e.counts[bisect_left(e.bounds, encode_s)] += 1
        e.total += encode_s


class ServingMetrics:
    """The server's metrics: cheap recording on the request path, families on scrape."""

    def __init__(self, manager: ModelManager, registry: CollectorRegistry | None = None) -> None:
        self.manager = manager
        self.requests: dict[tuple[str, str, str], RequestStats] = {}
        self.shadows: dict[tuple[str, str], ShadowStats] = {}
        self._phases: dict[tuple[str, str], PhaseStats] = {}
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(ServingCollector(self))

    def phases(self, model: str, version: str) -> PhaseStats:
        stats = self._phases.get((model, version))
        if stats is None:
            stats = self._phases[(model, version)] = PhaseStats()
        return stats

    def shadow_stats(self, model: str, version: str) -> ShadowStats:
        stats = self.shadows.get((model, version))
        if stats is None:
            from serving.routing.shadow import ShadowStats as _ShadowStats

            stats = self.shadows[(model, version)] = _ShadowStats()
        return stats

    def record(self, model: str, version: str, route: str, outcome: str, seconds: float) -> None:
        """One finished request (called on the event loop thread only)."""
        if model not in self.manager.models:
            model, version = UNKNOWN_MODEL, ""
        key = (model, version, route)
        stats = self.requests.get(key)
        if stats is None:
            stats = self.requests[key] = RequestStats()
        stats.outcomes[outcome] = stats.outcomes.get(outcome, 0) + 1
        stats.latency.observe(seconds)
        if outcome == "success":
            stats.success_seconds += seconds
        else:
            stats.fail_seconds += seconds

    def triton_stats(self, model: str | None, version: str | None) -> dict[str, object]:
        """Triton's statistics extension: per-version counts and cumulative durations (ns)."""
        def ns(seconds: float) -> int:
            return int(seconds * 1e9)

        out = []
        models = [self.manager.get_model(model)] if model else list(self.manager.models.values())
        for m in models:
            versions = list(m.versions.values())
            if version:
                versions = [v for v in versions if v.version_str == version]
                if not versions:
                    from serving.errors import NotFound

                    raise NotFound(f"model {m.name!r} has no loaded version {version}")
            for mv in versions:
                ok = fail = 0
                ok_s = fail_s = 0.0
                for (name, ver, _route), rs in list(self.requests.items()):
                    if name == mv.name and ver == mv.version_str:
                        n_ok = rs.outcomes.get("success", 0)
                        ok += n_ok
                        fail += sum(rs.outcomes.values()) - n_ok
                        ok_s += rs.success_seconds
                        fail_s += rs.fail_seconds
                st = mv.scheduler.stats if mv.scheduler else None
                zero = {"count": 0, "ns": 0}
                out.append({
                    "name": mv.name,
                    "version": mv.version_str,
                    "last_inference": int(st.last_at * 1000) if st else 0,
                    "inference_count": st.rows if st else 0,
                    "execution_count": st.batches if st else 0,
                    "inference_stats": {
                        "success": {"count": ok, "ns": ns(ok_s)},
                        "fail": {"count": fail, "ns": ns(fail_s)},
                        "queue": {"count": st.ran if st else 0,
                                  "ns": ns(st.queue_time.total) if st else 0},
                        "compute_input": zero,
                        "compute_infer": {"count": st.batches if st else 0,
                                          "ns": ns(st.run_seconds) if st else 0},
                        "compute_output": zero,
                        "cache_hit": zero,
                        "cache_miss": zero,
                    },
                    "batch_stats": [],
                })
        return {"model_stats": out}


class ServingCollector(Collector):
    """Reads the counters at scrape time."""

    def __init__(self, metrics: ServingMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests = CounterMetricFamily(
            "serving_requests", "Inference requests by outcome",
            labels=["model", "version", "route", "outcome"],
        )
        latency = HistogramMetricFamily(
            "serving_request_duration_seconds",
            "End-to-end inference request latency inside the server",
            labels=["model", "version", "route"],
        )
        for (model, version, route), stats in list(m.requests.items()):
            for outcome, n in list(stats.outcomes.items()):
                requests.add_metric([model, version, route, outcome], n)
            latency.add_metric(
                [model, version, route], stats.latency.family_buckets(), stats.latency.total
            )
        yield requests
        yield latency

        labels = ["model", "version"]
        batches = CounterMetricFamily("serving_batches", "Batches run", labels=labels)
        rows = CounterMetricFamily("serving_batch_rows", "Rows run in batches", labels=labels)
        failed = CounterMetricFamily(
            "serving_failed_batches", "Batches whose run raised", labels=labels
        )
        batch_size = HistogramMetricFamily(
            "serving_batch_size_rows", "Rows per batch", labels=labels
        )
        queue_s = CounterMetricFamily(
            "serving_queue_seconds", "Seconds requests spent queued, summed", labels=labels
        )
        run_s = CounterMetricFamily(
            "serving_inference_seconds", "Seconds in ONNX Runtime, summed over batches",
            labels=labels,
        )
        rejected = CounterMetricFamily(
            "serving_rejected_requests", "Requests refused or dropped before running",
            labels=[*labels, "reason"],
        )
        depth = GaugeMetricFamily("serving_queue_depth", "Requests queued", labels=labels)
        in_flight = GaugeMetricFamily(
            "serving_inflight_requests", "Requests running in worker threads", labels=labels
        )
        state = GaugeMetricFamily(
            "serving_model_state", "1 for the state each version is in",
            labels=[*labels, "state"],
        )
        load = GaugeMetricFamily(
            "serving_model_load_duration_seconds", "Seconds the version took to load",
            labels=labels,
        )
        from serving.lifecycle.states import State

        for model in list(m.manager.models.values()):
            for mv in list(model.versions.values()):
                key = [mv.name, mv.version_str]
                for s in State:
                    state.add_metric([*key, s.value], 1.0 if mv.state is s else 0.0)
                load.add_metric(key, mv.load_seconds)
                sched = mv.scheduler
                if sched is None:
                    continue
                st = sched.stats
                batches.add_metric(key, st.batches)
                rows.add_metric(key, st.rows)
                failed.add_metric(key, st.failed_batches)
                batch_size.add_metric(key, st.batch_sizes.family_buckets(), st.batch_sizes.total)
                queue_s.add_metric(key, st.queue_time.total)  # the histogram's sum
                run_s.add_metric(key, st.run_seconds)
                for reason, n in list((st.rejected or {}).items()):
                    rejected.add_metric([*key, reason], n)
                depth.add_metric(key, sched.queued)
                in_flight.add_metric(key, sched.in_flight)
        yield from (batches, rows, failed, batch_size, queue_s, run_s, rejected, depth,
                    in_flight, state, load)
        yield from self._phase_histograms()
        yield from self._drift()
        yield from self._routing()

    def _phase_histograms(self) -> Iterator[Metric]:
        m = self.metrics
        labels = ["model", "version"]
        decode = HistogramMetricFamily(
            "serving_decode_duration_seconds",
            "Reading and decoding a request until it is queued", labels=labels)
        queue = HistogramMetricFamily(
            "serving_queue_duration_seconds", "Time a request waited in the batcher's queue",
            labels=labels)
        infer = HistogramMetricFamily(
            "serving_inference_duration_seconds", "ONNX Runtime time per batch", labels=labels)
        encode = HistogramMetricFamily(
            "serving_encode_duration_seconds", "Encoding a response", labels=labels)
        for (model, version), ph in list(m._phases.items()):
            decode.add_metric([model, version], ph.decode.family_buckets(), ph.decode.total)
            encode.add_metric([model, version], ph.encode.family_buckets(), ph.encode.total)
        for model_obj in list(m.manager.models.values()):
            for mv in list(model_obj.versions.values()):
                if mv.scheduler is None:
                    continue
                st = mv.scheduler.stats
                key = [mv.name, mv.version_str]
                queue.add_metric(key, st.queue_time.family_buckets(), st.queue_time.total)
                infer.add_metric(key, st.run_time.family_buckets(), st.run_time.total)
        yield from (decode, queue, infer, encode)

    def _drift(self) -> Iterator[Metric]:
        labels = ["model", "version", "feature"]
        fpsi = GaugeMetricFamily("serving_feature_psi",
                                 "Population stability index of a feature vs the reference",
                                 labels=labels)
        fks = GaugeMetricFamily("serving_feature_ks",
                                "Largest CDF gap of a feature vs the reference", labels=labels)
        fnan = GaugeMetricFamily("serving_feature_nan_ratio",
                                 "Share of rows with NaN/Infinity in the feature", labels=labels)
        foor = GaugeMetricFamily("serving_feature_out_of_range_ratio",
                                 "Share of rows outside the reference range", labels=labels)
        opsi = GaugeMetricFamily("serving_prediction_psi",
                                 "Population stability index of an output vs the reference",
                                 labels=["model", "version", "output"])
        rows = GaugeMetricFamily("serving_drift_window_rows", "Rows in the drift window",
                                 labels=["model", "version"])
        age = GaugeMetricFamily("serving_model_age_seconds",
                                "Seconds since the serving version was packaged",
                                labels=["model", "version"])
        for model in list(self.metrics.manager.models.values()):
            for mv in list(model.versions.values()):
                if mv.monitor is None:
                    continue
                r = mv.monitor.report()
                key = [mv.name, mv.version_str]
                rows.add_metric(key, r["window_rows"])
                age.add_metric(key, r["age_seconds"])
                for f in r["features"]:
                    fpsi.add_metric([*key, f["name"]], f["psi"])
                    fks.add_metric([*key, f["name"]], f["ks"])
                    fnan.add_metric([*key, f["name"]], f["nan_share"])
                    foor.add_metric([*key, f["name"]], f["out_of_range_share"])
                for name, o in r["outputs"].items():
                    opsi.add_metric([*key, name], o["psi"])
        yield from (fpsi, fks, fnan, foor, opsi, rows, age)

    def _routing(self) -> Iterator[Metric]:
        m = self.metrics
        weight = GaugeMetricFamily(
            "serving_canary_weight_percent", "Share of routing keys sent to the canary",
            labels=["model", "version"],
        )
        step = GaugeMetricFamily(
            "serving_rollout_step", "Index of the rollout's current step", labels=["model"]
        )
        rstate = GaugeMetricFamily(
            "serving_rollout_state", "1 for the state the model's latest rollout is in",
            labels=["model", "state"],
        )
        decision = GaugeMetricFamily(
            "serving_rollout_last_decision", "1 for the rollout's last decision",
            labels=["model", "decision"],
        )
        for model in list(m.manager.models.values()):
            table, rs = model.table, model.routing
            if table.canary is not None:
                weight.add_metric([model.name, table.canary.version_str], table.canary_weight)
            ro = rs.rollout if rs else None
            if ro is not None:
                step.add_metric([model.name], float(ro.step))
                for s in RolloutState:
                    rstate.add_metric([model.name, s.value], 1.0 if ro.state is s else 0.0)
                if ro.last_decision:
                    decision.add_metric([model.name, ro.last_decision], 1.0)
        yield from (weight, step, rstate, decision)

        done = CounterMetricFamily("serving_rollouts", "Finished rollouts by outcome",
                                   labels=["model", "outcome"])
        promote_s = GaugeMetricFamily("serving_rollout_time_to_promote_seconds",
                                      "Mean start-to-promotion time of promoted rollouts",
                                      labels=["model"])
        restore_s = GaugeMetricFamily("serving_rollout_time_to_restore_seconds",
                                      "Mean time from exposure to restore, automatic rollbacks",
                                      labels=["model"])
        share = GaugeMetricFamily("serving_rollout_rollback_ratio",
                                  "Share of finished rollouts that were rolled back",
                                  labels=["model"])
        for model in list(m.manager.models.values()):
            past = model.routing.past_rollouts if model.routing else []
            if not past:
                continue
            summary = delivery_summary(past)
            done.add_metric([model.name, "promoted"], summary.promoted)
            done.add_metric([model.name, "rolled_back"], summary.rolled_back)
            done.add_metric([model.name, "aborted"], summary.aborted)
            share.add_metric([model.name], summary.rollback_share)
            if summary.mean_time_to_promote_s is not None:
                promote_s.add_metric([model.name], summary.mean_time_to_promote_s)
            if summary.mean_time_to_restore_s is not None:
                restore_s.add_metric([model.name], summary.mean_time_to_restore_s)
        yield from (done, promote_s, restore_s, share)
        labels = ["model", "version"]
        fams = {
            "mirrored": CounterMetricFamily(
                "serving_shadow_requests", "Requests mirrored to a shadow version", labels=labels),
            "compared": CounterMetricFamily(
                "serving_shadow_compared", "Shadow answers compared with the primary's",
                labels=labels),
            "label_rows": CounterMetricFamily(
                "serving_shadow_label_rows", "Rows whose labels were compared", labels=labels),
            "disagreements": CounterMetricFamily(
                "serving_shadow_disagreements", "Rows whose shadow label differed",
                labels=labels),
            "errors": CounterMetricFamily(
                "serving_shadow_errors", "Shadow runs that failed or timed out", labels=labels),
            "shed": CounterMetricFamily(
                "serving_shadow_shed", "Copies not sent: the shadow was busy", labels=labels),
        }
        diff = GaugeMetricFamily(
            "serving_shadow_abs_diff_max", "Largest absolute output difference seen",
            labels=labels,
        )
        mean = GaugeMetricFamily(
            "serving_shadow_abs_diff_mean", "Mean absolute output difference", labels=labels
        )
        for (model_name, version), st in list(m.shadows.items()):
            key = [model_name, version]
            for attr, fam in fams.items():
                fam.add_metric(key, getattr(st, attr))
            diff.add_metric(key, st.abs_diff_max)
            mean.add_metric(key, st.abs_diff_sum / st.values if st.values else 0.0)
        yield from (*fams.values(), diff, mean)
