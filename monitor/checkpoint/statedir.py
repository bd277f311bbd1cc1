"""The daemon's state directory: one snapshot per account-events partition, one per
instance for its prices.

::

    <dir>/partitions/<topic>/<partition>.snapshot
        the accounts of one account-events partition, the next offset of that
        partition, and the alert state of those accounts
    <dir>/instances/<instance>/prices.snapshot
        this instance's marks and the next offset of every prices partition

State follows the partitions, not the process: an instance that is assigned a
partition loads that partition's snapshot (written by whoever owned it last,
when the directory is shared; by itself earlier, when it is not) and seeks to
its offset; without one it rebuilds the partition from the beginning of the
compacted topic. Prices are per instance because every instance reads every
prices partition itself.

On a shared directory a partition snapshot is never replaced by one with a
lower offset: an instance that lost a partition without knowing it yet (a
long pause, a network split) cannot overwrite the new owner's newer state.
The offsets of one partition only grow with the events applied, so "higher
offset" is "newer state".
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, replace
from pathlib import Path

from monitor.checkpoint.codec import read_offsets
from monitor.checkpoint.state import BookState, concat_states, select_accounts
from monitor.checkpoint.store import Loaded, SnapshotStore
from monitor.errors import StateError

_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


def _checked(what: str, name: str) -> str:
    # Kafka topic names are [A-Za-z0-9._-]; instance ids become directory names too.
    if not _SAFE.match(name) or name in (".", ".."):
        raise StateError(f"{what} {name!r} cannot name a file (use letters, digits, . _ -)")
    return name


@dataclass(frozen=True, slots=True)
class Written:
    """The outcome of writing one partition's snapshot."""

    partition: int
    size: int  # bytes written; 0 when skipped
    skipped_for: int | None = None  # the newer offset found on disk, when skipped


class StateDir:
    """Snapshots of partitions and of this instance's prices under ``root``."""

    def __init__(self, root: str | Path, instance: str) -> None:
        self.root = Path(root)
        self.instance = _checked("instance id", instance)

    def prepare(self) -> None:
        """Create the directory and delete temporary files a crash left behind."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(
                f"{self.root}: cannot create the state directory ([state] dir): {exc}"
            ) from exc
        for tmp in self.root.glob("**/.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()

    # ------------------------------------------------------------ partitions
    def partition_store(self, topic: str, partition: int) -> SnapshotStore:
        return SnapshotStore(
            self.root / "partitions" / _checked("topic", topic), f"{int(partition)}.snapshot"
        )

    def load_partition(self, topic: str, partition: int, now_ms: int) -> Loaded:
        """The partition's snapshot (a corrupt one is set aside and reported)."""
        loaded = self.partition_store(topic, partition).load(now_ms)
        st = loaded.state
        if st is not None and set(st.offsets) != {(topic, partition)}:
            raise StateError(
                f"{self.partition_store(topic, partition).path}: holds offsets "
                f"{sorted(st.offsets)}, not those of {topic}/{partition}"
            )
        return loaded

    def write_partition(self, topic: str, partition: int, state: BookState) -> Written:
        """Write one partition's state unless the file on disk is newer (see above)."""
        ours = state.offsets.get((topic, partition))
        if ours is None or set(state.offsets) != {(topic, partition)}:
            raise ValueError(f"a snapshot of {topic}/{partition} must carry exactly its offset")
        store = self.partition_store(topic, partition)
        theirs = (read_offsets(store.path) or {}).get((topic, partition))
        if theirs is not None and theirs > ours:
            return Written(partition, 0, skipped_for=theirs)
        return Written(partition, store.write(state))

    def partitions_on_disk(self, topic: str) -> list[int]:
        d = self.root / "partitions" / _checked("topic", topic)
        return sorted(int(p.stem) for p in d.glob("*.snapshot") if p.stem.isdigit())

    # ------------------------------------------------------------ prices
    def prices_store(self) -> SnapshotStore:
        return SnapshotStore(self.root / "instances" / self.instance, "prices.snapshot")

    # ------------------------------------------------------------ reading it all
    def read_union(self, topic: str) -> BookState:
        """Every partition snapshot of ``topic`` on disk as one state, with this
        instance's prices (for tools and tests: the book of the whole group when the
        directory is shared). :class:`StateError` when a file is bad or missing."""
        prices = self.prices_store().read()
        parts = []
        for p in self.partitions_on_disk(topic):
            st = self.partition_store(topic, p).read()
            if st is not None:
                parts.append(st)
        if prices is None:
            if not parts:
                raise StateError(f"{self.root}: no snapshot of {topic} or of prices")
            prices = select_accounts(parts[0], [])
            prices = replace(prices, offsets={})
        return concat_states(prices, parts)


__all__ = ["StateDir", "Written"]
