"""The dead-letter writer: rejected input goes to the DLQ topic, never dropped.

Each rejected record is sent with its original key and value and the headers
``reason``, ``detail``, ``source_topic``, ``partition`` and ``offset``; it is
counted by topic and reason and logged (at most a few lines per reason and
interval, then a count of the lines held back, so a flood of bad input cannot
flood the log). Sends are enqueued by :meth:`pump` in record batches
(:class:`~monitor.sinks.kafka.BatchProducer`: a broker problem never raises
there, it is recorded and the records are sent again, in order, at the next
flush); :meth:`flush` awaits every delivery and is step 2 of the checkpoint
sequence: it raises :class:`~monitor.engine.DeliveryError` if anything is not
confirmed, so the checkpoint is skipped and nothing is lost.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer

from monitor.clock import Clock
from monitor.engine import DeliveryError
from monitor.events.decode import Rejection
from monitor.logs import get_logger
from monitor.metrics.instruments import Metrics
from monitor.sinks.base import SinkError
from monitor.sinks.kafka import BatchProducer, Record

log = get_logger("monitor.daemon.dlq")

LOG_LINES_PER_REASON = 10
LOG_INTERVAL_MS = 10_000
MAX_DETAIL = 500


class DeadLetters:
    """Rejected records on their way to the DLQ topic."""

    def __init__(
        self, producer: AIOKafkaProducer | None, topic: str, metrics: Metrics, clock: Clock
    ) -> None:
        self.topic = topic
        self._out = (
            None if producer is None else BatchProducer(producer, topic, name="dead letters")
        )
        self._metrics = metrics
        self._clock = clock
        self._pending: list[tuple[Any, Rejection]] = []
        self._window_start = 0
        self._logged: dict[str, int] = {}
        self._held: dict[str, int] = {}
        self.total = 0

    def add(self, record: Any, rejection: Rejection) -> None:
        """Count and log a rejection now; the send happens on the next :meth:`pump`."""
        reason = str(rejection.reason)
        self._metrics.reject(record.topic, reason)
        self._pending.append((record, rejection))
        self.total += 1
        self._log(record, rejection, reason)

    def _log(self, record: Any, rejection: Rejection, reason: str) -> None:
        now = self._clock.now_ms()
        if now - self._window_start >= LOG_INTERVAL_MS:
            for r, n in self._held.items():
                log.warning("rejected input not logged", reason=r, count=n)
            self._window_start = now
            self._logged.clear()
            self._held.clear()
        if self._logged.get(reason, 0) < LOG_LINES_PER_REASON:
            self._logged[reason] = self._logged.get(reason, 0) + 1
            log.warning(
                "rejected input",
                reason=reason,
                detail=rejection.detail[:MAX_DETAIL],
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
        else:
            self._held[reason] = self._held.get(reason, 0) + 1

    @property
    def pending(self) -> int:
        """Rejected records not confirmed by the broker yet."""
        return len(self._pending) + (0 if self._out is None else self._out.pending)

    async def pump(self) -> None:
        """Enqueue every pending record on the producer (never raises for a broker
        problem: see :class:`~monitor.sinks.kafka.BatchProducer`)."""
        pending, self._pending = self._pending, []
        records: list[Record] = []
        for record, rej in pending:
            reason = str(rej.reason)
            headers = [
                ("reason", reason.encode()),
                ("detail", rej.detail[:MAX_DETAIL].encode("utf-8", "replace")),
                ("source_topic", record.topic.encode()),
                ("partition", str(record.partition).encode()),
                ("offset", str(record.offset).encode()),
            ]
            records.append((record.key, record.value, headers))
            self._metrics.dlq.labels(reason=reason).inc()
        if self._out is not None and records:
            await self._out.send(records)

    async def flush(self, timeout_s: float) -> None:
        """Send what is pending and wait for every delivery; what failed is sent
        again first. Raises :class:`DeliveryError` if not all confirmed."""
        await self.pump()
        if self._out is None:
            return
        try:
            await self._out.flush(timeout_s)
        except SinkError as exc:
            raise DeliveryError(str(exc)) from exc
