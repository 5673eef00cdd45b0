"""Rollout analysis: compare a candidate with the primary over one step's window.

Pure functions over counts, so they are tested with plain numbers. Sample size is part of every
decision: below `min_requests` the answer is "wait", and an error-rate difference must be
significant (one-sided two-proportion z-test), not just visible.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from serving.monitoring.counters import LATENCY_BUCKETS

# Outcomes that count against a version: the model's or the server's fault, not the client's.
ERROR_OUTCOMES = ("model_error", "server_error", "timeout")


@dataclass(frozen=True)
class Thresholds:
    """What a candidate must satisfy at every step (all configurable per rollout)."""

    min_requests: int = 200  # per side and window before anything is decided
    max_error_rate_increase: float = 0.01  # candidate minus primary, absolute
    significance: float = 0.05  # one-sided p-value for the error-rate test
    max_p99_ratio: float = 1.5  # candidate p99 / primary p99
    # ...and only when the candidate is also this much slower: sub-millisecond jitter between
    # two processes' schedulers is not a regression
    min_latency_increase_ms: float = 1.0
    max_disagreement: float = 0.05  # shadow label disagreement rate
    max_shadow_error_rate: float = 0.01
    # Live accuracy from feedback (off when negative): the candidate may be at most this much
    # less accurate (absolute), judged once each side has `min_labels` labelled rows
    max_accuracy_drop: float = -1.0
    min_labels: int = 100

    @classmethod
    def from_json(cls, obj: dict[str, Any] | None) -> Thresholds:
        obj = dict(obj or {})
        unknown = set(obj) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown thresholds: {', '.join(sorted(unknown))}")
        t = cls(**{k: type(getattr(cls, k))(v) for k, v in obj.items()})
        if t.min_requests < 1 or not 0 < t.significance < 1 or t.max_p99_ratio <= 0:
            raise ValueError("thresholds out of range")
        return t

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Window:
    """Requests, errors and a latency histogram (counts per LATENCY_BUCKETS bucket)."""

    requests: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    labelled: int = 0  # rows whose true label came back as feedback
    correct: int = 0  # of those, rows the version answered right

    def minus(self, earlier: Window) -> Window:
        return Window(
            self.requests - earlier.requests,
            self.errors - earlier.errors,
            [a - b for a, b in zip(self.latency, earlier.latency, strict=True)],
            self.labelled - earlier.labelled,
            self.correct - earlier.correct,
        )

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile(self, q: float) -> float | None:
        """The q-quantile (seconds), linearly interpolated inside its bucket; None without data."""
        total = sum(self.latency)
        if not total:
            return None
        rank = q * total
        acc = 0
        for i, n in enumerate(self.latency):
            if n and acc + n >= rank:
                lo = LATENCY_BUCKETS[i - 1] if i else 0.0
                hi = LATENCY_BUCKETS[i] if i < len(LATENCY_BUCKETS) else LATENCY_BUCKETS[-1] * 2
                return lo + (hi - lo) * (rank - acc) / n
            acc += n
        return None


def latency_quantile(n: int) -> float:
    """The highest quantile a window of n requests can estimate: p99 needs about a thousand."""
    return 0.99 if n >= 1000 else 0.95 if n >= 200 else 0.9


@dataclass
class ShadowWindow:
    compared: int = 0
    label_rows: int = 0
    disagreements: int = 0
    mirrored: int = 0
    errors: int = 0
    primary_latency: list[int] = field(default_factory=list)
    shadow_latency: list[int] = field(default_factory=list)

    def minus(self, earlier: ShadowWindow) -> ShadowWindow:
        def sub(a: list[int], b: list[int]) -> list[int]:
            return [x - y for x, y in zip(a, b or [0] * len(a), strict=True)]

        return ShadowWindow(
            self.compared - earlier.compared,
            self.label_rows - earlier.label_rows,
            self.disagreements - earlier.disagreements,
            self.mirrored - earlier.mirrored,
            self.errors - earlier.errors,
            sub(self.primary_latency, earlier.primary_latency),
            sub(self.shadow_latency, earlier.shadow_latency),
        )


@dataclass
class Verdict:
    decision: str  # "pass", "fail" or "wait"
    reason: str
    measured: dict[str, Any]


def error_rate_p_value(e_primary: int, n_primary: int, e_cand: int, n_cand: int) -> float:
    """One-sided p-value that the candidate's error rate exceeds the primary's."""
    if not n_primary or not n_cand:
        return 1.0
    pooled = (e_primary + e_cand) / (n_primary + n_cand)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_primary + 1 / n_cand))
    if se == 0:
        return 1.0 if e_cand / n_cand <= e_primary / n_primary else 0.0
    z = (e_cand / n_cand - e_primary / n_primary) / se
    return 0.5 * math.erfc(z / math.sqrt(2))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


def judge_canary(primary: Window, candidate: Window, t: Thresholds) -> Verdict:
    """Candidate vs primary over one canary window (live traffic on both). Latency is compared
    at p99 when both sides have ~1000 requests, else at the highest quantile the window can
    estimate (p95, p90), which the measured values name."""
    q = latency_quantile(min(primary.requests, candidate.requests))
    qname = f"p{round(q * 100)}"
    p99_p, p99_c = primary.quantile(q), candidate.quantile(q)
    m = {
        "primary_requests": primary.requests, "candidate_requests": candidate.requests,
        "primary_error_rate": round(primary.error_rate, 5),
        "candidate_error_rate": round(candidate.error_rate, 5),
        f"primary_{qname}_ms": _ms(p99_p), f"candidate_{qname}_ms": _ms(p99_c),
    }
    if candidate.requests < t.min_requests or primary.requests < t.min_requests:
        return Verdict("wait", f"fewer than {t.min_requests} requests on a side", m)
    p = error_rate_p_value(primary.errors, primary.requests, candidate.errors, candidate.requests)
    m["error_rate_p_value"] = round(p, 6)
    if candidate.error_rate - primary.error_rate > t.max_error_rate_increase and p < t.significance:
        return Verdict(
            "fail",
            f"error_rate: candidate {candidate.error_rate:.2%} vs primary "
            f"{primary.error_rate:.2%} (p={p:.3g}, limit +{t.max_error_rate_increase:.2%})",
            m,
        )
    if (
        p99_p
        and p99_c
        and p99_c / p99_p > t.max_p99_ratio
        and (p99_c - p99_p) * 1e3 > t.min_latency_increase_ms
    ):
        return Verdict(
            "fail",
            f"p99_latency: candidate {qname} {p99_c * 1e3:.2f} ms vs primary "
            f"{p99_p * 1e3:.2f} ms (ratio {p99_c / p99_p:.2f} > {t.max_p99_ratio})",
            m,
        )
    accuracy = judge_accuracy(primary, candidate, t, m)
    return accuracy if accuracy is not None else Verdict("pass", "within thresholds", m)


def accuracy_drop_p_value(correct_p: int, n_p: int, correct_c: int, n_c: int,
                          limit: float) -> float:
    """One-sided p-value that the primary's accuracy exceeds the candidate's by more than
    `limit` (a two-proportion z-test of the difference against the limit, unpooled)."""
    acc_p, acc_c = correct_p / n_p, correct_c / n_c
    se = math.sqrt(acc_p * (1 - acc_p) / n_p + acc_c * (1 - acc_c) / n_c)
    if se == 0:
        return 0.0 if acc_p - acc_c > limit else 1.0
    return 0.5 * math.erfc((acc_p - acc_c - limit) / se / math.sqrt(2))


def judge_accuracy(primary: Window, candidate: Window, t: Thresholds,
                   m: dict[str, Any]) -> Verdict | None:
    """With `max_accuracy_drop` set: wait for labels, or fail on a significant drop; None when
    the candidate passes (or the check is off)."""
    if t.max_accuracy_drop < 0:
        return None
    m["primary_labelled"], m["candidate_labelled"] = primary.labelled, candidate.labelled
    if min(primary.labelled, candidate.labelled) < t.min_labels:
        return Verdict("wait", f"fewer than {t.min_labels} labelled rows on a side", m)
    acc_p, acc_c = primary.correct / primary.labelled, candidate.correct / candidate.labelled
    p = accuracy_drop_p_value(primary.correct, primary.labelled, candidate.correct,
                              candidate.labelled, t.max_accuracy_drop)
    m.update(primary_accuracy=round(acc_p, 5), candidate_accuracy=round(acc_c, 5),
             accuracy_p_value=round(p, 6))
    if p < t.significance:
        return Verdict(
            "fail",
            f"accuracy: candidate {acc_c:.2%} vs primary {acc_p:.2%} on labelled requests "
            f"(p={p:.3g}, limit -{t.max_accuracy_drop:.2%})",
            m,
        )
    return None


def judge_bake(baseline: Window, promoted: Window, t: Thresholds) -> Verdict:
    """The promoted candidate against the old primary's last canary window. That window is
    frozen, so it cannot grow: the candidate needs `min_requests`, the baseline is compared
    with what it has (the tests weigh sample size), and without one (a plan with no canary
    step) the bake passes on the candidate's request count alone."""
    if promoted.requests < t.min_requests:
        return judge_canary(baseline, promoted, t)  # "wait", with what was measured
    if not baseline.requests:
        measured = judge_canary(baseline, promoted, t).measured
        return Verdict("pass", "no canary window to compare with", measured)
    floor = min(t.min_requests, baseline.requests)
    return judge_canary(baseline, promoted, replace(t, min_requests=floor))


def judge_shadow(w: ShadowWindow, t: Thresholds) -> Verdict:
    """A shadow window: the candidate answered mirrored copies; compare with the primary's."""
    rate = w.disagreements / w.label_rows if w.label_rows else 0.0
    err = w.errors / w.mirrored if w.mirrored else 0.0
    p99_p = Window(latency=w.primary_latency).quantile(0.99) if w.primary_latency else None
    p99_s = Window(latency=w.shadow_latency).quantile(0.99) if w.shadow_latency else None
    m = {
        "mirrored": w.mirrored, "compared": w.compared, "label_rows": w.label_rows,
        "disagreement_rate": round(rate, 5), "shadow_error_rate": round(err, 5),
        "primary_p99_ms": _ms(p99_p), "shadow_p99_ms": _ms(p99_s),
    }
    if w.mirrored < t.min_requests:
        return Verdict("wait", f"fewer than {t.min_requests} mirrored requests", m)
    if err > t.max_shadow_error_rate:
        return Verdict("fail", f"shadow_errors: {err:.2%} > {t.max_shadow_error_rate:.2%}", m)
    if w.label_rows and rate > t.max_disagreement:
        # one-sided test against the limit, so a handful of rows never decides
        se = math.sqrt(t.max_disagreement * (1 - t.max_disagreement) / w.label_rows)
        z = (rate - t.max_disagreement) / se if se else math.inf
        if z > 1.645:
            return Verdict(
                "fail",
                f"disagreement: {rate:.2%} of {w.label_rows} rows > {t.max_disagreement:.2%}",
                m,
            )
    # Shadow latency is reported, not judged: a copy queues behind the primary it mirrors, so
    # it is slower by construction. The canary steps judge latency on live traffic.
    return Verdict("pass", "within thresholds", m)
