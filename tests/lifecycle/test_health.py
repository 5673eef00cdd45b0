"""Readiness: loading, draining, a model without a ready version, and queue saturation with its
sustain period, on plain objects (no server)."""

from __future__ import annotations

from dataclasses import dataclass, field

from serving.lifecycle.health import Readiness


@dataclass
class Policy:
    max_queue_size: int = 100


@dataclass
class Sched:
    queued: int = 0
    policy: Policy = field(default_factory=Policy)


@dataclass
class Version:
    label: str
    scheduler: Sched | None


@dataclass
class Model:
    versions: dict[int, Version]


class Manager:
    """What readiness reads of the model manager."""

    def __init__(self, *scheds: Sched) -> None:
        self.models = {"m": Model({i + 1: Version(f"m:{i + 1}", s) for i, s in enumerate(scheds)})}
        self.why = ""

    def not_ready_reason(self, strict: bool = True) -> str:
        return self.why if strict else ""


def readiness(manager: Manager, fraction: float = 0.5, sustain_s: float = 2.0) -> Readiness:
    return Readiness(manager, True, fraction, sustain_s)  # type: ignore[arg-type]


def test_ready_says_why_not() -> None:
    manager = Manager(Sched())
    r = readiness(manager)
    assert r.check() == (True, "")
    manager.why = "model m has no ready version: version 1 failed to load: checksum mismatch"
    assert r.check() == (False, manager.why)
    assert Readiness(manager, False, 0.5, 2.0).check() == (True, "")  # type: ignore[arg-type]
    manager.why = ""
    r.draining = True
    assert r.check() == (False, "draining: shutting down")


def test_saturation_needs_a_sustained_streak_both_ways() -> None:
    sched = Sched()
    r = readiness(Manager(Sched(), sched), fraction=0.5, sustain_s=2.0)
    sched.queued = 50  # at the fraction of its bound
    r.sample(now=0.0)
    r.sample(now=1.9)
    assert r.check()[0]  # not for long enough yet
    r.sample(now=2.0)
    ok, why = r.check()
    assert not ok and why == "saturated: model m:2 has 50/100 requests queued"
    sched.queued = 10
    r.sample(now=2.5)
    sched.queued = 60  # a burst back over restarts nothing: still saturated
    r.sample(now=3.0)
    sched.queued = 0
    r.sample(now=3.5)
    r.sample(now=5.4)
    assert not r.check()[0]
    r.sample(now=5.5)
    assert r.check() == (True, "")


def test_a_short_dip_does_not_flip_it() -> None:
    sched = Sched(queued=99)
    r = readiness(Manager(sched), fraction=0.5, sustain_s=1.0)
    r.sample(now=0.0)
    sched.queued = 0
    r.sample(now=0.5)  # the streak broke
    sched.queued = 99
    r.sample(now=0.9)
    r.sample(now=1.5)
    assert r.check()[0]
    r.sample(now=2.0)  # a full second since the streak began at 0.9
    assert not r.check()[0]


def test_off_when_the_fraction_is_zero() -> None:
    r = readiness(Manager(Sched(queued=100)), fraction=0.0)
    r.sample(now=0.0)
    r.sample(now=100.0)
    assert r.check() == (True, "")
