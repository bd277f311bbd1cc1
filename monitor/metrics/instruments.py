"""The counters and histograms updated by the engine and the daemon.

Labelled counters exist at zero for every label value they can take as soon as
it is known (every rejection reason; every input topic once the daemon names
it), so that a dashboard or an alert sees the series before the first
increment and ``rate()``/``increase()`` count that first increment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.events.decode import RejectReason

# Latency buckets: the tick-to-evaluation target is p99 <= 50 ms.
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)
_APPLY = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_BATCH = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536)
_SNAPSHOT = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


REJECT_REASONS = tuple(str(r) for r in RejectReason)


class _InputCounter(Counter):
    """A counter by input topic that tells :class:`Metrics` about each topic the
    first time it is named (the daemon asks for the counter of each input topic
    when it starts), so the topic's rejection counters can start at zero."""

    on_topic: Callable[[str], None] | None = None

    def labels(self, *labelvalues: object, **labelkwargs: object) -> Self:
        child = super().labels(*labelvalues, **labelkwargs)
        if self.on_topic is not None:
            self.on_topic(str(labelkwargs["topic"] if labelkwargs else labelvalues[0]))
        return child


class Metrics:
    """Every metric the monitor exports itself, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.consumed = _InputCounter(
            "monitor_messages_consumed", "Messages read from Kafka.", ["topic"], registry=registry
        )
        self.consumed.on_topic = self._init_topic
        self.applied = Counter(
            "monitor_messages_applied",
            "Messages applied to the book.",
            ["topic"],
            registry=registry,
        )
        self.rejected = Counter(
            "monitor_messages_rejected",
            "Messages rejected (bad input or stale), by topic and reason.",
            ["topic", "reason"],
            registry=registry,
        )
        self.dlq = Counter(
            "monitor_dlq_messages", "Messages sent to the dead-letter topic, by reason.",
            ["reason"], registry=registry,
        )  # fmt: skip
        for reason in REJECT_REASONS:
            self.dlq.labels(reason=reason)
        self.batch_size = Histogram(
            "monitor_batch_size", "Messages per applied batch.", buckets=_BATCH, registry=registry
        )
        self.apply_seconds = Histogram(
            "monitor_apply_seconds",
            "Time to apply and evaluate one batch.",
            buckets=_APPLY,
            registry=registry,
        )
        self.tick_to_evaluation = Histogram(
            "monitor_tick_to_evaluation_seconds",
            "Event time of a tick to the end of the evaluation that applied it "
            "(the latest tick per symbol of each batch).",
            buckets=_LATENCY,
            registry=registry,
        )
        self.tick_age = Histogram(
            "monitor_tick_age_seconds",
            "Processing time at receipt minus event time of a tick "
            "(the latest tick per symbol of each batch).",
            buckets=_LATENCY,
            registry=registry,
        )
        self.snapshot_seconds = Histogram(
            "monitor_snapshot_duration_seconds",
            "Time to write one snapshot.",
            buckets=_SNAPSHOT,
            registry=registry,
        )

        # Shared with other components (the MQTT sink's queue): one family, one
        # label value per queue.
        self.queue_depth = shared_gauge(
            registry, "monitor_queue_depth", "Items waiting in an internal queue.", ["queue"]
        )

    def _init_topic(self, topic: str) -> None:
        """Rejections of ``topic`` at zero for every reason (idempotent)."""
        for reason in REJECT_REASONS:
            self.rejected.labels(topic=topic, reason=reason)

    def reject(self, topic: str, reason: RejectReason | str, n: int = 1) -> None:
        self.rejected.labels(topic=topic, reason=str(reason)).inc(n)


def shared_gauge(registry: CollectorRegistry, name: str, doc: str, labels: list[str]) -> Gauge:
    """A gauge on ``registry``, or the one another component already registered there."""
    try:
        return Gauge(name, doc, labels, registry=registry)
    except ValueError:
        names: dict[str, Any] = getattr(registry, "_names_to_collectors", {})
        found = names.get(name)
        if isinstance(found, Gauge):
            return found
        raise
