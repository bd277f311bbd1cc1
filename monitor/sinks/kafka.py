"""Alerts out to a Kafka topic (key = account, or ``market`` for market-level alerts,
such as the cascade alerts).

``publish`` only enqueues on the producer; ``flush`` awaits every delivery
future, so a checkpoint never gets ahead of an undelivered alert (a send that
is never awaited loses its error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from monitor.alerts.model import wire_account, wire_bytes
from monitor.sinks.base import DeliveryTimeoutError, SinkError


class KafkaAlertSink:
    """An :class:`~monitor.engine.AlertSink` writing alerts as JSON to ``topic``.

    Pass a started ``producer`` to share one (the sink then neither starts nor
    stops it), or aiokafka ``producer_options`` to have the sink own one.
    """

    name = "kafka"
    durable = True

    def __init__(
        self,
        topic: str,
        producer: AIOKafkaProducer | None = None,
        **producer_options: Any,
    ) -> None:
        self.topic = topic
        self._own = producer is None
        self._options = producer_options
        self._producer = producer
        self._pending: list[Any] = []
        self._inflight: list[tuple[Any, asyncio.Future[Any]]] = []
        self.delivered = 0

    async def start(self) -> None:
        if self._own and self._producer is None:
            self._producer = AIOKafkaProducer(acks="all", **self._options)
            await self._producer.start()

    async def publish(self, alerts: Sequence[Any]) -> None:
        """Enqueue ``alerts`` on the producer (delivery is awaited by :meth:`flush`)."""
        if self._producer is None:
            raise SinkError("kafka alert sink: publish before start")
        for alert in alerts:
            await self._send(alert)

    async def _send(self, alert: Any) -> None:
        assert self._producer is not None
        key = wire_account(alert).encode()
        fut = await self._producer.send(self.topic, value=wire_bytes(alert), key=key)
        self._inflight.append((alert, fut))

    async def flush(self, timeout_s: float) -> None:
        """Wait for every delivery; a failed one is sent again on the next flush and
        an error is raised now."""
        retry, self._pending = self._pending, []
        for alert in retry:
            await self._send(alert)
        inflight, self._inflight = self._inflight, []
        if not inflight:
            return
        done, _ = await asyncio.wait([f for _, f in inflight], timeout=timeout_s)
        failed = 0
        for alert, fut in inflight:
            if fut not in done:
                self._inflight.append((alert, fut))
            elif fut.cancelled() or fut.exception() is not None:
                self._pending.append(alert)
                failed += 1
            else:
                self.delivered += 1
        if failed or self._inflight:
            raise DeliveryTimeoutError(
                f"alerts to {self.topic}: {failed} failed, {len(self._inflight)} not "
                f"confirmed within {timeout_s:g} s"
            )

    async def close(self) -> None:
        if self._own and self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()
