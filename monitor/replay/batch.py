"""Columns of decoded input records, the unit replay moves around.

A :class:`Batch` holds one row per record (blank lines have none): where it
came from (stream index and line number), its event time, the merge key, and
either a tick in columns (``kind`` :data:`TICK`: symbol id and price) or a
Python object (``kind`` :data:`OBJECT`: a decoded account event, a
:class:`~monitor.events.Rejection` or a :class:`~monitor.sources.files.BadLine`).
Objects are kept in row order in ``objs``, so the ``k``-th object row holds
``objs[k]``.

``key`` is the running maximum of ``ts`` within the record's own stream (a
record whose time cannot be read takes the time of the one before it), which
is what orders the merge: see :mod:`monitor.replay.merge`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]
F64 = npt.NDArray[np.float64]

TICK: Final = 0
OBJECT: Final = 1
NO_TIME: Final = np.iinfo(np.int64).min  # a record whose time cannot be read


@dataclass(slots=True)
class Batch:
    stream: I32
    line: I64
    ts: I64
    key: I64
    kind: I8
    sym: I32
    price: F64
    objs: list[object]

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    @staticmethod
    def empty() -> Batch:
        return Batch(
            np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64),
            np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros(0, np.int32),
            np.zeros(0, np.float64), [],
        )  # fmt: skip

    def take(self, idx: npt.NDArray[np.integer] | slice) -> Batch:
        """The rows ``idx`` (a slice, or indices in any order), objects following."""
        kind = self.kind[idx]
        if not self.objs:  # ticks only: nothing to count (windows slice batches often)
            objs: list[object] = []
        elif isinstance(idx, slice):
            start, _, _ = idx.indices(len(self))
            k0 = int(np.count_nonzero(self.kind[:start] == OBJECT))
            objs = self.objs[k0 : k0 + int(np.count_nonzero(kind == OBJECT))]
        else:
            obj_no = np.cumsum(self.kind == OBJECT) - 1
            sel = np.asarray(idx)[kind == OBJECT]
            objs = [self.objs[int(k)] for k in obj_no[sel]]
        return Batch(self.stream[idx], self.line[idx], self.ts[idx], self.key[idx], kind,
                     self.sym[idx], self.price[idx], objs)  # fmt: skip


def concat(parts: Sequence[Batch]) -> Batch:
    """Rows of ``parts`` one after the other."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Batch.empty()
    if len(parts) == 1:
        return parts[0]
    objs: list[object] = []
    for p in parts:
        objs.extend(p.objs)
    return Batch(
        np.concatenate([p.stream for p in parts]),
        np.concatenate([p.line for p in parts]),
        np.concatenate([p.ts for p in parts]),
        np.concatenate([p.key for p in parts]),
        np.concatenate([p.kind for p in parts]),
        np.concatenate([p.sym for p in parts]),
        np.concatenate([p.price for p in parts]),
        objs,
    )


def running_key(ts: I64, carry: int) -> tuple[I64, int]:
    """Merge keys of a stream's next rows: the running maximum of their times,
    starting from ``carry`` (the last key of the rows before)."""
    if ts.shape[0] == 0:
        return ts.copy(), carry
    key: I64 = np.maximum.accumulate(np.maximum(ts, carry))
    return key, int(key[-1])
