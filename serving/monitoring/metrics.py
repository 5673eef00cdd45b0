"""Every metric the server exports, defined here and nowhere else: the Prometheus collector, at
the top of the package (it reads lifecycle and the data plane; nothing below imports it).

The request path only bumps plain counters (serving.monitoring.counters) on the event loop
thread; `ServingCollector` turns them into metric families when Prometheus scrapes `/metrics`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from serving.dataplane import Served
from serving.lifecycle.manager import ModelManager
from serving.lifecycle.states import State
from serving.monitoring.counters import LATENCY_BUCKETS, CounterStore, Histogram
from serving.monitoring.quality import payload_families, quality_families
from serving.monitoring.statistics import model_statistics
from serving.payload.log import PayloadLog
from serving.registry.rollout_state import RolloutState, delivery_summary

UNKNOWN_MODEL = "_unknown"  # unknown names share one label value: clients can't add series


class ServingMetrics(CounterStore):
    """The server's counters (cheap recording on the request path) and its Prometheus registry
    (families built on scrape)."""

    def __init__(self, manager: ModelManager, registry: CollectorRegistry | None = None,
                 payload: PayloadLog | None = None) -> None:
        super().__init__()
        self.manager = manager
        self.payload = payload if payload is not None else PayloadLog()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(ServingCollector(self))

    def record(
        self, model: str, version: str, route: str, outcome: str, seconds: float,
        served: Served | None = None, protocol: str = "http",
    ) -> None:
        """One finished request (called on the event loop thread only), with its phases when it
        succeeded: every per-request counter of the version moves in this one call."""
        if model not in self.manager.models:
            model, version = UNKNOWN_MODEL, ""
        by = self.protocols
        key = (model, protocol, outcome)
        by[key] = by.get(key, 0) + 1
        stats = self.requests.get((model, version, route))
        if stats is None:
            stats = self.request_stats(model, version, route)
        if served is not None and outcome == "success":
            _v, _r, _b, _id, decode_s, queue_s, run_s, encode_s = served
            stats.add_success(seconds, decode_s, queue_s, run_s, encode_s)
        else:
            stats.add(outcome, seconds)

    def triton_stats(self, model: str | None, version: str | None) -> dict[str, Any]:
        """Triton's statistics extension (see serving.monitoring.statistics)."""
        return model_statistics(self.manager, self, model, version)


class ServingCollector(Collector):
    """Reads the counters at scrape time."""

    def __init__(self, metrics: ServingMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._batches()
        yield from self._versions()
        yield from self._phase_histograms()
        yield from self._drift()
        yield from self._rollouts()
        yield from self._delivery()
        yield from self._shadows()
        yield from payload_families(self.metrics.payload)
        yield from quality_families(self.metrics.payload)

    def _requests(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "serving_requests", "Inference requests by outcome",
            labels=["model", "version", "route", "outcome"],
        )
        latency = HistogramMetricFamily(
            "serving_request_duration_seconds",
            "End-to-end inference request latency inside the server",
            labels=["model", "version", "route"],
        )
        for (model, version, route), stats in list(self.metrics.requests.items()):
            for outcome, n in list(stats.outcomes.items()):
                requests.add_metric([model, version, route, outcome], n)
            latency.add_metric(
                [model, version, route], stats.latency.family_buckets(), stats.latency.total
            )
        by_protocol = CounterMetricFamily(
            "serving_protocol_requests", "Inference requests by protocol (http, grpc) and outcome",
            labels=["model", "protocol", "outcome"],
        )
        for (model, protocol, outcome), n in list(self.metrics.protocols.items()):
            by_protocol.add_metric([model, protocol, outcome], n)
        yield from (requests, latency, by_protocol)

    def _batches(self) -> Iterator[Metric]:
        """Batch counters: every version the process has served, for as long as it runs (they
        outlive reloads and unloads, as the request counters do)."""
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
        for model in list(self.metrics.manager.models.values()):
            for version, st in list(model.batch_stats.items()):
                key = [model.name, str(version)]
                batches.add_metric(key, st.batches)
                rows.add_metric(key, st.rows)
                failed.add_metric(key, st.failed_batches)
                batch_size.add_metric(key, st.batch_sizes.family_buckets(), st.batch_sizes.total)
                queue_s.add_metric(key, st.queue_time.total)  # the histogram's sum
                run_s.add_metric(key, st.run_seconds)
                for reason, n in list((st.rejected or {}).items()):
                    rejected.add_metric([*key, reason], n)
        yield from (batches, rows, failed, batch_size, queue_s, run_s, rejected)

    def _versions(self) -> Iterator[Metric]:
        """Gauges of the versions loaded now."""
        labels = ["model", "version"]
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
        for model in list(self.metrics.manager.models.values()):
            for mv in list(model.versions.values()):
                key = [mv.name, mv.version_str]
                for s in State:
                    state.add_metric([*key, s.value], 1.0 if mv.state is s else 0.0)
                load.add_metric(key, mv.load_seconds)
                sched = mv.scheduler
                if sched is not None:
                    depth.add_metric(key, sched.queued)
                    in_flight.add_metric(key, sched.in_flight)
        yield from (depth, in_flight, state, load)

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
        # recorded per (model, version, route) with each successful request; shown per version
        phases: dict[tuple[str, str], tuple[Histogram, Histogram]] = {}
        for (model, version, _route), rs in list(m.requests.items()):
            if not any(rs.decode.counts):
                continue  # no successful request yet
            d, e = phases.setdefault(
                (model, version), (Histogram(LATENCY_BUCKETS), Histogram(LATENCY_BUCKETS)))
            d.add(rs.decode)
            e.add(rs.encode)
        for (model, version), (d, e) in phases.items():
            decode.add_metric([model, version], d.family_buckets(), d.total)
            encode.add_metric([model, version], e.family_buckets(), e.total)
        for model_obj in list(m.manager.models.values()):
            for v, st in list(model_obj.batch_stats.items()):
                key = [model_obj.name, str(v)]
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

    def _rollouts(self) -> Iterator[Metric]:
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

    def _delivery(self) -> Iterator[Metric]:
        """Delivery figures over each model's finished rollouts."""
        m = self.metrics
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

    def _shadows(self) -> Iterator[Metric]:
        labels = ["model", "version"]
        fams = {
            "mirrored": CounterMetricFamily(
                "serving_shadow_requests",
                "Requests mirrored to a shadow version (counted when the copy has run)",
                labels=labels),
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
        # queue + run of both sides of each compared pair (what a fleet's rollout reports)
        primary_s = HistogramMetricFamily(
            "serving_shadow_primary_duration_seconds",
            "Queue and run time of the primary's answer that a shadow copy was compared with",
            labels=labels)
        shadow_s = HistogramMetricFamily(
            "serving_shadow_duration_seconds", "Queue and run time of shadow copies",
            labels=labels)
        for (model_name, version), st in list(self.metrics.shadows.items()):
            key = [model_name, version]
            for attr, fam in fams.items():
                fam.add_metric(key, getattr(st, attr))
            diff.add_metric(key, st.abs_diff_max)
            mean.add_metric(key, st.abs_diff_sum / st.values if st.values else 0.0)
            for hist, h in ((primary_s, st.primary_latency), (shadow_s, st.shadow_latency)):
                hist.add_metric(key, h.family_buckets(), h.total)
        yield from (*fams.values(), diff, mean, primary_s, shadow_s)
