"""Sticky canary assignment: a routing key hashes to a point in [0, 100); the canary takes the
keys below its weight. Raising the weight only moves keys from primary to canary, never back,
and every replica (any process, any host) computes the same point for the same key."""

from __future__ import annotations

import hashlib


def bucket(key: str) -> float:
    """The key's point in [0, 100), stable across processes (not Python's salted hash)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 * 100.0


def goes_to_canary(key: str, weight: float) -> bool:
    return weight > 0.0 and bucket(key) < weight
