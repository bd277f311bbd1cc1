"""The dead-letter writer: rejected input goes to the DLQ topic, never dropped.

Each rejected record is sent with its original key and value and the headers
``reason``, ``detail``, ``source_topic``, ``partition`` and ``offset``; it is
counted by topic and reason and logged (at most a few lines per reason and
interval, then a count of the lines held back, so a flood of bad input cannot
flood the log). Sends are enqueued by :meth:`pump`; :meth:`flush` awaits every
delivery and is step 2 of the checkpoint sequence.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from monitor.clock import Clock
from monitor.engine import DeliveryError
from monitor.events.decode import Rejection
from monitor.logs import get_logger
from monitor.metrics.instruments import Metrics

log = get_logger("monitor.daemon.dlq")

LOG_LINES_PER_REASON = 10
LOG_INTERVAL_MS = 10_000
MAX_DETAIL = 500


class DeadLetters:
    """Rejected records on their way to the DLQ topic."""

    def __init__(
        self, producer: AIOKafkaProducer | None, topic: str, metrics: Metrics, clock: Clock
    ) -> None:
        self._producer = producer
        self.topic = topic
        self._metrics = metrics
        self._clock = clock
        self._pending: list[tuple[Any, Rejection]] = []
        self._inflight: list[tuple[Any, Rejection, asyncio.Future[Any]]] = []
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
        return len(self._pending) + len(self._inflight)

    async def pump(self) -> None:
        """Enqueue every pending record on the producer."""
        pending, self._pending = self._pending, []
        for record, rej in pending:
            reason = str(rej.reason)
            headers = [
                ("reason", reason.encode()),
                ("detail", rej.detail[:MAX_DETAIL].encode("utf-8", "replace")),
                ("source_topic", record.topic.encode()),
                ("partition", str(record.partition).encode()),
                ("offset", str(record.offset).encode()),
            ]
            if self._producer is not None:
                fut = await self._producer.send(
                    self.topic, value=record.value, key=record.key, headers=headers
                )
                self._inflight.append((record, rej, fut))
            self._metrics.dlq.labels(reason=reason).inc()

    async def flush(self, timeout_s: float) -> None:
        """Send what is pending and wait for every delivery. A failed send is queued
        again (and an error raised, so this checkpoint stops before committing)."""
        await self.pump()
        inflight, self._inflight = self._inflight, []
        if not inflight:
            return
        done, _ = await asyncio.wait([f for _, _, f in inflight], timeout=timeout_s)
        failed = 0
        for record, rej, fut in inflight:
            if fut not in done:
                self._inflight.append((record, rej, fut))
            elif fut.cancelled() or fut.exception() is not None:
                self._pending.append((record, rej))
                failed += 1
        if failed or self._inflight:
            raise DeliveryError(
                f"dead letters: {failed} failed, {len(self._inflight)} not confirmed "
                f"within {timeout_s:g} s"
            )
