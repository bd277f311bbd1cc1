"""The offsets a checkpoint writes and commits, kept by one rule each.

- *finished*: per partition, the offset after the last record whose effect is
  in the book (applied, or rejected to the DLQ). It is advanced only after a
  batch is applied, never backwards, and set outright only when a partition's
  state is replaced wholesale (a snapshot loaded, a partition dropped).
- *committed*: what the consumer group holds, as far as this instance knows
  (its own commits, and what it read from the group on assignment).

A commit offers the finished offset of a partition only when it is ahead of
the committed one: the group's offset never moves backwards, and never past
work that is not finished (a finished offset is at most the offset after the
last applied record).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class OffsetLedger(Generic[K]):
    def __init__(self) -> None:
        self.finished: dict[K, int] = {}
        self.committed: dict[K, int] = {}

    def advance(self, key: K, next_offset: int) -> None:
        """A batch of ``key`` is applied up to ``next_offset`` (exclusive)."""
        if next_offset > self.finished.get(key, -1):
            self.finished[key] = next_offset

    def reset(self, key: K, next_offset: int) -> None:
        """The partition's state was replaced by one consistent with ``next_offset``."""
        self.finished[key] = next_offset

    def forget(self, key: K) -> None:
        """The partition's state left the book (it went to another instance)."""
        self.finished.pop(key, None)

    def group_has(self, key: K, offset: int | None) -> None:
        """What the group committed for ``key`` (read on assignment)."""
        if offset is not None:
            self.committed[key] = max(self.committed.get(key, -1), offset)

    def keep_committed(self, keys: Iterable[K]) -> None:
        keep = set(keys)
        self.committed = {k: o for k, o in self.committed.items() if k in keep}

    def due(self, snapshot: dict[K, int]) -> dict[K, int]:
        """The commits to make, given the finished offsets a durable snapshot holds
        (taken earlier: the book may have moved on since, the snapshot has not):
        forwards only."""
        return {k: o for k, o in snapshot.items() if o > self.committed.get(k, -1)}

    def confirm(self, commits: dict[K, int]) -> None:
        """The group accepted ``commits``."""
        for k, o in commits.items():
            self.committed[k] = max(self.committed.get(k, -1), o)


__all__ = ["OffsetLedger"]
