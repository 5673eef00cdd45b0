"""The store of recent predictions that feedback joins with: a model's newest blocks of logged
records (serving/payload/block.py), and an index of their ids built when feedback asks.

Nothing is filed per request: a block joins the store when it opens, and the request path only
appends to it. A lookup first indexes the records appended since the last one (ids to record
numbers: plain ints, which the garbage collector does not track), so feedback pays for the
index, at about 0.1 us a record, and inference does not. Loop thread only.
"""

from __future__ import annotations

from collections import deque

from serving.payload.block import CAPACITY, Block
from serving.payload.record import Answer


class Store:
    """One model's recent answers: at least its last `limit` that are not a shadow's."""

    __slots__ = ("_answers", "_blocks", "_by_number", "_counted", "_growing", "_pending",
                 "_primary", "_shadows")

    def __init__(self) -> None:
        self._blocks: deque[Block] = deque()  # oldest first
        self._by_number: dict[int, Block] = {}
        self._pending: list[Block] = []  # blocks with records not indexed yet
        # answers that are not a shadow's in the blocks, as last counted: a block is counted
        # again (its records since) while it may grow
        self._answers = 0
        self._counted: dict[int, int] = {}  # block number: its answers counted
        self._growing: list[Block] = []
        # id -> its newest answer that is not a shadow's, and the shadows' answers to it, as
        # refs: block number * CAPACITY + the record's index there
        self._primary: dict[str, int] = {}
        self._shadows: dict[str, tuple[int, ...]] = {}

    def __len__(self) -> int:
        return sum(map(len, self._blocks))

    def keep(self, block: Block, limit: int) -> None:
        """File a block as it opens; let go of the oldest blocks that the newer ones make
        unneeded (they hold `limit` answers that are not a shadow's). The count is kept as
        blocks grow, not summed: at 1% sampling a block holds a tick's few records, and the
        store thousands of blocks."""
        self._blocks.append(block)
        self._by_number[block.number] = block
        self._pending.append(block)
        self._counted[block.number] = 0
        self._growing.append(block)
        growing = []
        for b in self._growing:
            if b.route != "shadow":
                n = len(b)
                self._answers += n - self._counted[b.number]
                self._counted[b.number] = n
            if not b.sealed:
                growing.append(b)
        self._growing = growing
        while len(self._blocks) > 1:
            first = self._blocks[0]
            if self._answers - self._counted[first.number] < limit:
                break
            self._forget(self._blocks.popleft())

    def _forget(self, block: Block) -> None:
        del self._by_number[block.number]
        self._answers -= self._counted.pop(block.number)
        for waiting in (self._pending, self._growing):
            if waiting and waiting[0] is block:  # the oldest, as a rule
                del waiting[0]
            elif block in waiting:
                waiting.remove(block)
        base = block.number * CAPACITY
        shadow = block.route == "shadow"
        for i, rid in enumerate(block.ids[:block.indexed]):
            if not shadow:
                if self._primary.get(rid) == base + i:
                    del self._primary[rid]
                continue
            refs = tuple(r for r in self._shadows.get(rid, ()) if r // CAPACITY != block.number)
            if refs:
                self._shadows[rid] = refs
            else:
                self._shadows.pop(rid, None)

    def _index(self) -> None:
        """Index the records appended since the last lookup."""
        still = []
        for block in self._pending:
            base = block.number * CAPACITY
            start, end = block.indexed, len(block)
            if block.route == "shadow":
                for i in range(start, end):
                    rid = block.ids[i]
                    self._shadows[rid] = (*self._shadows.get(rid, ()), base + i)
            else:
                for i in range(start, end):
                    rid = block.ids[i]
                    old = self._primary.get(rid)
                    # a reused id: the newest answer counts (blocks open side by side, a
                    # primary's and a canary's, are indexed one after the other)
                    if old is None or self._time(old) <= block.core.time(i):
                        self._primary[rid] = base + i
            block.indexed = end
            if not block.sealed:
                still.append(block)
        self._pending = still

    def _time(self, ref: int) -> float:
        return self._by_number[ref // CAPACITY].core.time(ref % CAPACITY)

    def answers(self, request_id: str) -> tuple[Answer, ...] | None:
        """The newest answer to an id that is not a shadow's, then the shadows' answers to
        it; None when the store no longer holds one."""
        self._index()
        ref = self._primary.get(request_id)
        if ref is None:
            return None
        refs = (ref, *self._shadows.get(request_id, ()))
        return tuple(self._by_number[r // CAPACITY].answer(r % CAPACITY, request_id)
                     for r in refs)
