"""This replica's side of the rollout controller's lease (`serving.registry.lease`): take it when
it is free, renew it while holding it, give it up at shutdown.

Exactly one replica of a fleet drives rollouts: every replica started with the controller on
runs this loop, and only the holder's controller ticks. A holder stops acting a tenth of the
lease's time before it would expire, so a holder that cannot renew (a slow disk, an unreachable
bucket) stops before another replica may take over. Runs on the event loop; the store's reads
and writes go to a thread (S3 is the network).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import replace

from serving.registry.lease import Lease, LeaseStore, claim

log = logging.getLogger("serving.rollout")


class Leadership:
    """Whether this process holds the controller lease, and who does."""

    def __init__(self, store: LeaseStore, url: str = "", ttl_s: float = 15.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.url = url
        self.ttl_s = ttl_s
        self.clock = clock
        self.me = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.lease: Lease | None = None  # the last one read or written
        self._token = ""

    @property
    def holding(self) -> bool:
        lease = self.lease
        return (lease is not None and lease.holder == self.me
                and self.clock() < lease.expires_at - 0.1 * self.ttl_s)

    @property
    def term(self) -> float | None:
        """When this holder's lease began (None: not holding); a new term restarts windows."""
        return self.lease.acquired_at if self.holding and self.lease is not None else None

    def renew_now(self) -> bool:
        """Take or renew the lease if it is free or ours (blocking); True while holding it."""
        was = self.holding
        lease, token = self.store.read()
        mine = claim(lease, self.me, self.url, self.clock(), self.ttl_s)
        if mine is not None and self.store.swap(mine, token):
            lease, token = mine, self.store.read()[1]
        self.lease, self._token = lease, token
        if self.holding != was:
            if self.holding:
                log.info("took the rollout controller lease (%s)", self.url or self.me)
            else:
                log.warning("lost the rollout controller lease to %s",
                            lease.url or lease.holder if lease else "nobody")
        return self.holding

    async def run(self) -> None:
        """Renew three times per time to live, for as long as the server runs."""
        while True:
            try:
                await asyncio.to_thread(self.renew_now)
            except Exception as exc:  # an unreadable store: not holding, try again
                self.lease = None
                log.error("the rollout controller lease could not be read or renewed: %s", exc)
            await asyncio.sleep(self.ttl_s / 3)

    def release(self) -> None:
        """Give the lease up at once (shutdown), so another replica need not wait it out."""
        if self.holding and self.lease is not None:
            self.store.swap(replace(self.lease, expires_at=0.0), self._token)
            self.lease = None
