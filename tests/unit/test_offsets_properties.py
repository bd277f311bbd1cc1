"""Committed offsets never pass unfinished work and never go backwards, whatever
the interleaving of fetches, applies, checkpoints and rebalances.

The machine drives the daemon's pieces (:class:`OffsetLedger`, the
:class:`EventQueue` of fetched chunks) the way :class:`monitor.daemon.Daemon`
does: chunks are applied in queue order and skipped when their partition is
not owned; a checkpoint snapshots the finished offsets of owned partitions and
commits what is due; a revocation checkpoints then forgets the queue; an
assignment keeps, reloads (from this instance's last snapshot) or rebuilds
each partition and reads the group's committed offset.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from monitor.checkpoint.offsets import OffsetLedger
from monitor.sources.kafka import EventChunk, EventQueue

PARTS = (0, 1, 2)


class Daemonish(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.log = dict.fromkeys(PARTS, 0)  # records in each partition
        self.position = dict.fromkeys(PARTS, 0)  # the consumer's next fetch
        self.applied = dict.fromkeys(PARTS, 0)  # records whose effect is in the book
        self.durable: dict[int, int] = {}  # offset of the last snapshot written per partition
        self.durable_ever: dict[int, int] = {}  # ... including snapshots since lost
        self.group: dict[int, int] = {}  # what the group holds
        self.ledger: OffsetLedger[int] = OffsetLedger()
        self.queue = EventQueue(high_water=10, low_water=5)
        self.owned: set[int] = set(PARTS)

    @rule(p=st.sampled_from(PARTS), n=st.integers(1, 5))
    def produce(self, p: int, n: int) -> None:
        self.log[p] += n

    @rule(p=st.sampled_from(PARTS), n=st.integers(1, 4))
    def fetch(self, p: int, n: int) -> None:
        if p not in self.owned or self.position[p] >= self.log[p]:
            return
        end = min(self.log[p], self.position[p] + n)
        self.queue.put(EventChunk(p, [], [object()] * (end - self.position[p]), end))  # type: ignore[arg-type]
        self.position[p] = end

    @rule()
    def apply(self) -> None:
        for ch in self.queue.take_all():
            if ch.tp not in self.owned:
                continue
            start = ch.next_offset - len(ch.records)
            assert start == self.applied[ch.tp], "a chunk applied out of order or twice"
            self.applied[ch.tp] = ch.next_offset
            self.ledger.advance(ch.tp, ch.next_offset)

    @rule()
    def checkpoint(self) -> None:
        snap = {p: o for p, o in self.ledger.finished.items() if p in self.owned}
        for p, o in snap.items():
            self.durable[p] = max(self.durable.get(p, 0), o)
            self.durable_ever[p] = max(self.durable_ever.get(p, 0), o)
        due = self.ledger.due(snap)
        for p, o in due.items():
            assert o >= self.group.get(p, -1)
            self.group[p] = o
        self.ledger.confirm(due)

    @rule(p=st.sampled_from(PARTS))
    def lose_snapshot(self, p: int) -> None:
        """A corrupt snapshot set aside (or, with per-instance storage, a partition
        another instance committed): the next assignment rebuilds it."""
        self.durable.pop(p, None)

    @rule(p=st.sampled_from(PARTS))
    def away_and_back(self, p: int) -> None:
        """With per-instance storage: the partition goes to another instance, which
        finishes the log and commits, then comes back here, where only an older
        snapshot of it (or none) exists."""
        if p not in self.owned:
            return
        self.rebalance(gone={p})
        self.group[p] = max(self.group.get(p, -1), self.log[p])
        self.durable_ever[p] = max(self.durable_ever.get(p, 0), self.log[p])
        self.rebalance(gone=set())

    @rule(gone=st.sets(st.sampled_from(PARTS)))
    def rebalance(self, gone: set[int]) -> None:
        self.checkpoint()  # on revocation
        self.queue.clear()
        assigned = set(PARTS) - gone
        held = set(self.ledger.finished)
        for p in held - assigned:
            self.ledger.forget(p)
        for p in assigned:
            if p in held:
                self.position[p] = self.ledger.finished[p]  # seek to what was applied
            elif p in self.durable:
                self.ledger.reset(p, self.durable[p])  # load its snapshot
                self.position[p] = self.applied[p] = self.durable[p]
            else:
                self.position[p] = self.applied[p] = 0  # rebuild from the beginning
        self.ledger.keep_committed(assigned)
        for p in assigned:
            self.ledger.group_has(p, self.group.get(p))
        self.owned = assigned

    @invariant()
    def commits_never_pass_durable_work(self) -> None:
        for p, o in self.group.items():
            assert o <= self.durable_ever.get(p, 0)

    @invariant()
    def finished_never_passes_applied(self) -> None:
        for p, o in self.ledger.finished.items():
            assert o <= self.applied[p]


TestOffsets = Daemonish.TestCase
TestOffsets.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
