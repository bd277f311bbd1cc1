"""Several recordings merged into one stream by event time, in columns.

The order is the one :func:`monitor.sources.files.merge_by_event_time` gives
record by record: by merge key (the running maximum of event time within a
file), then by file (the order given on the command line), then by line. So
equal times keep file order and a file's own order is always kept. Batches
are merged a chunk at a time: rows are released once no file can still
produce a row that sorts before them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from monitor.replay.batch import Batch, concat


def merge_batches(streams: Sequence[Iterable[Batch]]) -> Iterator[Batch]:
    """Merge per-file batch streams (each in key order) into one, in key order."""
    if len(streams) == 1:
        yield from (b for b in streams[0] if len(b))
        return
    iters = [iter(s) for s in streams]
    bufs = [Batch.empty() for _ in iters]
    live = [True] * len(iters)

    def refill(i: int) -> None:
        while live[i]:
            nxt = next(iters[i], None)
            if nxt is None:
                live[i] = False
            elif len(nxt):
                bufs[i] = concat([bufs[i], nxt])
                return

    for i in range(len(iters)):
        refill(i)
    while True:
        active = [i for i in range(len(iters)) if live[i]]
        if not active:
            out = _ordered([b for b in bufs if len(b)])
            if len(out):
                yield out
            return
        horizon = min(int(bufs[i].key[-1]) for i in active)
        # Rows strictly before the horizon can go: no file can still produce a
        # row that sorts before them (a row at the horizon from an earlier file
        # may still come, so rows at the horizon wait).
        parts: list[Batch] = []
        for i, b in enumerate(bufs):
            if len(b):
                cut = int(np.searchsorted(b.key, horizon, side="left"))
                if cut:
                    parts.append(b.take(slice(0, cut)))
                    bufs[i] = b.take(slice(cut, len(b)))
        if parts:
            yield _ordered(parts)
        for i in active:
            if not len(bufs[i]) or int(bufs[i].key[-1]) == horizon:
                refill(i)


def _ordered(parts: list[Batch]) -> Batch:
    """Rows of ``parts`` (given in file order) sorted by key, stably."""
    b = concat(parts)
    if len(parts) <= 1:
        return b
    order = np.argsort(b.key, kind="stable")
    return b.take(order)


__all__ = ["merge_batches"]
