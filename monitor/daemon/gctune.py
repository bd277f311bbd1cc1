"""Cyclic garbage-collector settings for the daemon's process.

The daemon allocates a few GC-tracked objects per Kafka record (aiokafka's
``ConsumerRecord``, queue entries) at up to several hundred thousand records
a second, and they die by reference counting within a batch. With CPython's
default thresholds (700, 10, 10) that churn triggers a young collection every
700 allocations and, every hundred of those, a full collection that walks
the whole heap (the rebuilt book's state included): measured with 100,000
accounts, about 30% of the ingest time went to the collector, in pauses of
about 100 ms -- the tail of the tick-to-evaluation latency.

:func:`for_streaming` raises the thresholds (a young collection every 50,000
allocations, full ones rarely); :func:`freeze_long_lived` moves everything
alive into the permanent generation once the book is rebuilt, so a full
collection no longer walks it. Reference counting still frees everything as
before; only cyclic garbage waits longer. Both are process-wide, which is what
``monitor run`` is: a program embedding :class:`~monitor.daemon.Daemon` gets
them too.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)


def for_streaming() -> None:
    """Collector thresholds for a high, short-lived allocation rate."""
    if gc.get_threshold()[0] < THRESHOLDS[0]:
        gc.set_threshold(*THRESHOLDS)


def freeze_long_lived() -> None:
    """Exclude every object alive now (the rebuilt book and its state) from
    future collections."""
    gc.collect()  # garbage frozen now would never be collected; later calls are cheap
    gc.freeze()
