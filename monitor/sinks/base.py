"""The interface every alert sink implements, and a fan-out over several.

Lifecycle: ``start()`` once, ``publish()`` for each evaluation's alerts,
``flush(timeout_s)`` before the daemon's checkpoint, ``close()`` at shutdown
(start and close from the same task: a sink may hold a task group between
them). ``publish`` never waits for the network unless the sink's ``durable``
contract needs it; ``flush`` returns once everything accepted so far is
delivered, or raises :class:`DeliveryTimeoutError`.

``durable`` sinks (Kafka, files) carry every alert they accept, so the
checkpoint waits for them; a non-durable sink (MQTT) may drop under overload,
counts what it drops, and is never waited for by the checkpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import structlog

from monitor.alerts.model import Alert, AlertBatch
from monitor.errors import MonitorError

log = structlog.get_logger("monitor.sinks")


class SinkError(MonitorError):
    """An alert sink cannot deliver (names the sink and what to check)."""


class DeliveryTimeoutError(SinkError):
    """Alerts accepted by a sink were not delivered within the time allowed."""


@runtime_checkable
class AlertSink(Protocol):
    name: str
    durable: bool

    async def start(self) -> None: ...

    async def publish(self, alerts: Sequence[Alert | Any]) -> None:
        """Accept alerts (in order); a durable sink may wait for delivery. Alerts are
        :class:`~monitor.alerts.model.Alert` or another type with ``kind``, an
        ``account`` (or ``key``) and ``to_json_bytes()`` (or ``to_json()``): see
        :func:`~monitor.alerts.model.wire_bytes`."""
        ...

    async def flush(self, timeout_s: float) -> None:
        """Wait until everything accepted so far is delivered."""
        ...

    async def close(self) -> None: ...


class FanOut:
    """Several sinks as one: every alert to each, in order, the enqueue-only
    (non-durable) sinks first and the alerts encoded once for all
    (:class:`~monitor.alerts.model.AlertBatch`); ``flush`` waits for the
    durable ones only (what the checkpoint needs)."""

    name = "fanout"

    def __init__(self, sinks: Sequence[AlertSink]) -> None:
        self.sinks = tuple(sinks)
        self.durable = any(s.durable for s in self.sinks)

    async def start(self) -> None:
        for s in self.sinks:
            await s.start()

    async def publish(self, alerts: Sequence[Alert | Any]) -> None:
        if not alerts:
            return
        batch = alerts if isinstance(alerts, AlertBatch) else AlertBatch(alerts)
        for s in sorted(self.sinks, key=lambda s: s.durable):
            await s.publish(batch)

    async def flush(self, timeout_s: float) -> None:
        durable = [s for s in self.sinks if s.durable]
        if not durable:
            return
        async with asyncio.TaskGroup() as tg:
            for s in durable:
                tg.create_task(s.flush(timeout_s), name=f"flush-{s.name}")

    async def close(self) -> None:
        # In reverse order of start; one failing sink does not keep the others open.
        errors: list[BaseException] = []
        for s in reversed(self.sinks):
            try:
                await s.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("sink close failed", sink=s.name, error=repr(exc))
                errors.append(exc)
        if errors:
            raise SinkError(f"closing alert sinks failed: {errors!r}")
