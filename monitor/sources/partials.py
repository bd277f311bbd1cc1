"""Kafka in: the latest partial market view of every instance.

The ``partials`` topic is compacted with the instance id as key, so its latest
record per key is that instance's latest partial; a null value (a tombstone,
written by an instance that stops cleanly) removes it. Every reader consumes
every partition from the beginning, outside any consumer group.

A record that cannot be read is reported (logged once per instance and
reason, and counted) and otherwise ignored: a partial is a derived view that
the next publication replaces, not input to keep.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from monitor.cascade.partial import PartialError, PartialMarket, from_wire
from monitor.config import KafkaConfig
from monitor.logs import get_logger
from monitor.sources.kafka import (
    POLL_TIMEOUT_MS,
    consumer_options,
    partitions_of,
    stop_consumer,
)

log = get_logger("monitor.sources.partials")


class PartialsFeed:
    """Keeps the latest readable partial per instance (see the module docstring)."""

    def __init__(self, cfg: KafkaConfig, topic: str) -> None:
        self.topic = topic
        self.consumer = AIOKafkaConsumer(**consumer_options(cfg, group=False))
        self.latest: dict[str, PartialMarket] = {}
        self.unreadable = 0
        self._warned: set[tuple[str, str]] = set()
        self.idle_polls = 0  # empty polls in a row (the reader has seen the end)

    async def start(self, stop: asyncio.Event) -> bool:
        await self.consumer.start()
        tps = await partitions_of(self.consumer, self.topic, stop)
        if not tps:
            return False
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        return True

    def take(self, records: list[Any]) -> None:
        for rec in records:
            key = (rec.key or b"").decode("utf-8", "replace")
            if rec.value is None:
                self.latest.pop(key, None)
                continue
            try:
                part = from_wire(rec.value)
            except PartialError as exc:
                self.unreadable += 1
                if (key, str(exc)) not in self._warned:
                    self._warned.add((key, str(exc)))
                    log.warning("unreadable partial", instance=key, offset=rec.offset,
                                problem=str(exc))  # fmt: skip
                continue
            self.latest[part.instance or key] = part

    async def poll(self) -> None:
        try:
            data = await self.consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
        except KafkaError as exc:
            log.warning("poll failed", topic=self.topic, error=str(exc))
            await asyncio.sleep(0.5)
            return
        self.idle_polls = 0 if data else self.idle_polls + 1
        for records in data.values():
            self.take(records)

    async def run(self, stop: asyncio.Event) -> None:
        """Start (waiting, in this task, for the topic to exist) and keep polling."""
        if not await self.start(stop):
            return
        while not stop.is_set():
            await self.poll()

    async def stop(self) -> None:
        with contextlib.suppress(KafkaError, TimeoutError):
            async with asyncio.timeout(3.0):
                await stop_consumer(self.consumer)


async def read_partials(
    cfg: KafkaConfig, topic: str, *, idle_polls: int = 3, timeout_s: float = 30.0
) -> PartialsFeed:
    """Read the topic until ``idle_polls`` polls in a row come back empty (the broker
    may not answer end-offset queries, so the end is found by reading)."""
    feed = PartialsFeed(cfg, topic)
    stop = asyncio.Event()
    try:
        async with asyncio.timeout(timeout_s):
            if await feed.start(stop):
                while feed.idle_polls < idle_polls:
                    await feed.poll()
    except TimeoutError:
        stop.set()
        raise
    finally:
        await feed.stop()
    return feed


__all__ = ["PartialsFeed", "read_partials"]
