"""The rollout controller's lease: the claim rule, the directory store's compare-and-swap, and
two replicas' Leadership over one registry with a fake clock."""

from __future__ import annotations

from pathlib import Path

from serving.lifecycle.leadership import Leadership
from serving.registry.lease import FileLeaseStore, Lease, claim


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_claim_renews_its_own_takes_a_dead_one_and_respects_a_live_one() -> None:
    assert claim(None, "a", "http://a", 10.0, 5.0) == Lease("a", "http://a", 15.0, 10.0)
    live = Lease("b", "http://b", 20.0, 1.0)
    assert claim(live, "a", "http://a", 19.9, 5.0) is None
    assert claim(live, "a", "http://a", 20.0, 5.0) == Lease("a", "http://a", 25.0, 20.0)
    assert claim(live, "b", "http://b2", 12.0, 5.0) == Lease("b", "http://b2", 17.0, 1.0)


def test_the_file_store_swaps_only_what_it_read(tmp_path: Path) -> None:
    store = FileLeaseStore(tmp_path)
    assert store.read() == (None, "")
    first = Lease("a", "", 10.0, 0.0)
    assert store.swap(first, "")
    assert not store.swap(Lease("b", "", 10.0, 0.0), "")  # someone wrote it meanwhile
    lease, token = store.read()
    assert lease == first
    assert store.swap(Lease("b", "", 20.0, 11.0), token)
    assert not store.swap(Lease("a", "", 30.0, 12.0), token)  # a stale token
    assert store.read()[0] == Lease("b", "", 20.0, 11.0)


def test_an_unreadable_lease_may_be_replaced(tmp_path: Path) -> None:
    store = FileLeaseStore(tmp_path)
    store.path.parent.mkdir(parents=True)
    store.path.write_text("{not json")
    lease, token = store.read()
    assert lease is None and token
    assert store.swap(Lease("a", "", 10.0, 0.0), token)


def test_one_holder_at_a_time_and_the_lease_moves_when_it_dies(tmp_path: Path) -> None:
    clock = Clock()
    a = Leadership(FileLeaseStore(tmp_path), "http://a", ttl_s=3.0, clock=clock)
    b = Leadership(FileLeaseStore(tmp_path), "http://b", ttl_s=3.0, clock=clock)
    assert a.renew_now() and not b.renew_now()
    assert a.holding and not b.holding
    assert b.lease is not None and b.lease.url == "http://a"  # b knows where to forward
    first_term = a.term
    for _ in range(5):  # a renews every second: b never gets it
        clock.now += 1.0
        assert a.renew_now() and not b.renew_now()
    assert a.term == first_term
    clock.now += 2.8  # a died after its last renewal: it stops acting before the expiry...
    assert not a.holding
    assert not b.renew_now()  # ...and b must wait for the expiry itself
    clock.now += 0.3
    assert b.renew_now() and b.holding and b.term == clock.now
    assert not a.renew_now()  # a came back: b holds it now
    assert a.lease is not None and a.lease.url == "http://b"


def test_release_hands_over_at_once(tmp_path: Path) -> None:
    clock = Clock()
    a = Leadership(FileLeaseStore(tmp_path), "http://a", ttl_s=30.0, clock=clock)
    b = Leadership(FileLeaseStore(tmp_path), "http://b", ttl_s=30.0, clock=clock)
    assert a.renew_now()
    a.release()
    assert not a.holding
    assert b.renew_now()
