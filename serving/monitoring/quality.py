"""The payload log's and the live quality's metric families (read at scrape time from
`serving.payload`; `metrics.py`'s collector yields them)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from serving.payload.log import PayloadLog

_KEY = ["model", "version", "route"]


def payload_families(log: PayloadLog) -> Iterator[Metric]:
    """Logged, written, dropped and buffered records."""
    logged = CounterMetricFamily("serving_payload_logged", "Requests captured for the payload "
                                 "log (sampled or by routing key)", labels=_KEY)
    for key, n in list(log.logged.items()):
        logged.add_metric(list(key), n)
    written = CounterMetricFamily("serving_payload_written",
                                  "Logged records a sink accepted (a segment or a receiver)")
    written.add_metric([], log.written)
    dropped = CounterMetricFamily(
        "serving_payload_dropped", "Logged records lost: buffer_full (the oldest, while the "
        "writer lagged), sink_error (a segment or event the sink refused), encode_error, "
        "capture_error (a request the log could not copy)",
        labels=["reason"])
    for reason, n in list(log.dropped.items()):
        dropped.add_metric([reason], n)
    buffered = GaugeMetricFamily("serving_payload_buffered",
                                 "Logged records waiting for the writer thread")
    buffered.add_metric([], log.buffered)
    yield from (logged, written, dropped, buffered)


def quality_families(log: PayloadLog) -> Iterator[Metric]:
    """Feedback counts and delays, and live quality over each sliding window."""
    book = log.feedback
    received = CounterMetricFamily("serving_feedback", "Feedback entries by outcome "
                                   "(accepted, unknown, duplicate, invalid)",
                                   labels=["model", "outcome"])
    for (model, outcome), n in list(book.outcomes.items()):
        received.add_metric([model, outcome], n)
    delay = HistogramMetricFamily("serving_feedback_delay_seconds",
                                  "Time from a prediction to its feedback", labels=["model"])
    for model, h in list(book.delay.items()):
        delay.add_metric([model], h.family_buckets(), h.total)
    labelled = CounterMetricFamily("serving_feedback_labelled_rows", "Rows with feedback",
                                   labels=_KEY)
    correct = CounterMetricFamily("serving_feedback_correct_rows",
                                  "Classifier rows whose feedback matched the answer",
                                  labels=_KEY)
    coverage = GaugeMetricFamily("serving_feedback_coverage_ratio",
                                 "Share of logged requests that got feedback", labels=_KEY)
    rows = GaugeMetricFamily("serving_live_window_rows",
                             "Labelled rows in the live quality window", labels=_KEY)
    accuracy = GaugeMetricFamily("serving_live_accuracy",
                                 "Accuracy over the live quality window", labels=_KEY)
    precision = GaugeMetricFamily("serving_live_precision", "Per-class precision over the "
                                  "live quality window", labels=[*_KEY, "class"])
    recall = GaugeMetricFamily("serving_live_recall", "Per-class recall over the live "
                               "quality window", labels=[*_KEY, "class"])
    mae = GaugeMetricFamily("serving_live_mae", "Mean absolute error over the live quality "
                            "window", labels=_KEY)
    rmse = GaugeMetricFamily("serving_live_rmse", "Root mean squared error over the live "
                             "quality window", labels=_KEY)
    for key, q in list(book.quality.items()):
        k = list(key)
        labelled.add_metric(k, q.rows)
        if q.kind == "class":
            correct.add_metric(k, q.correct)
        if log.logged.get(key):
            coverage.add_metric(k, min(1.0, q.requests / log.logged[key]))
        s = q.summary()
        rows.add_metric(k, s["rows"])
        if "accuracy" in s:
            accuracy.add_metric(k, s["accuracy"])
            for cls, pr in s["classes"].items():
                if pr["precision"] is not None:
                    precision.add_metric([*k, cls], pr["precision"])
                if pr["recall"] is not None:
                    recall.add_metric([*k, cls], pr["recall"])
        if "mae" in s:
            mae.add_metric(k, s["mae"])
            rmse.add_metric(k, s["rmse"])
    yield from (received, delay, labelled, correct, coverage, rows, accuracy, precision, recall,
                mae, rmse)
