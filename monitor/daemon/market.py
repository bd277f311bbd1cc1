"""The daemon's market-level job: this instance's map and cascades, its partial
market view on the ``partials`` topic, and the group view merged from every
instance's partial.

Each ``map_interval_s``: a snapshot of the book (taken between batches, under
the daemon's apply lock), then, in the market worker process
(:mod:`monitor.cascade.worker`: the computations take seconds of CPU at a
million accounts and would hold the daemon's GIL), the liquidation map (its
gauges) and the partial (published, key = instance id; delivery awaited);
then, in a thread, the group view of the latest partial of every instance
(``monitor_group_*``: per-symbol aggregates, cheap). Each
``cascade_interval_s``: the standard shocks on this instance's book
(``monitor_cascade_*``) and the ``cascade`` alerts. A round due for both
sends the snapshot to the worker once.

Who alerts on cascades: alone (the group view merges only this instance's
partial), an instance alerts on its own, exact cascades. In a group of
several, one instance speaks for the market: the owner of account-events
partition 0 (Kafka's assignment is the coordination, none is added), on the
group view's ``lower`` bound; the others keep their own cascades as gauges
only. A switch between the two modes starts the new mode's watch afresh.

A failure in one round (a bug, a broker error on publishing) is logged and
counted (``monitor_market_errors_total``) and the job carries on: the
market view is derived and the next round replaces it; it must not take the
daemon down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter

from monitor.cascade.config import MarketConfig
from monitor.cascade.engine import CascadeResult
from monitor.cascade.groupview import GroupReport, GroupView
from monitor.cascade.partial import PartialMarket, to_wire
from monitor.cascade.service import MarketRisk
from monitor.cascade.snapshot import BookSnapshot
from monitor.cascade.watch import CascadeWatch
from monitor.cascade.worker import CascadeSpec, MarketWorker, PartialSpec, RoundJob, partial_moves
from monitor.clock import Clock
from monitor.config import KafkaConfig
from monitor.instruments.model import RiskParams
from monitor.logs import get_logger
from monitor.sources.partials import PartialsFeed

log = get_logger("monitor.daemon.market")

PUBLISH_TIMEOUT_S = 10.0
TOMBSTONE_TIMEOUT_S = 2.0  # within the daemon's close budget, leaving time to stop the reader


class MarketJob:
    """See the module docstring. ``snapshot`` and ``publish`` are the daemon's."""

    def __init__(
        self,
        params: RiskParams,
        config: MarketConfig,
        registry: CollectorRegistry,
        clock: Clock,
        *,
        instance: str,
        partials_topic: str,
    ) -> None:
        self.config = config
        self.clock = clock
        self.instance = instance
        self.topic = partials_topic
        self.risk = MarketRisk(params, config, registry)
        self.group = GroupView(params, config, registry) if config.partials else None
        self.grid = partial_moves(config)
        self.feed: PartialsFeed | None = None
        self.last_partial: PartialMarket | None = None
        self.last_group: GroupReport | None = None
        self.group_watch = CascadeWatch(
            config.cascade_amplification_threshold, config.cascade_notional_threshold
        )
        self._mode = "own"
        self.errors = Counter(
            "monitor_market_errors",
            "Rounds of the market-level job that failed (logged; the job carries on)",
            registry=registry,
        )
        self.worker = MarketWorker()
        self.worker_cpu = Counter(
            "monitor_market_worker_cpu_seconds",
            "CPU time the market worker process spent on the map, partial and cascades",
            registry=registry,
        )

    # ------------------------------------------------------------ lifecycle
    def attach(self, cfg: KafkaConfig) -> None:
        """Create the partials reader (it connects in :meth:`run`'s task group)."""
        if self.group is not None:
            self.feed = PartialsFeed(cfg, self.topic)

    async def close(self, producer: AIOKafkaProducer | None) -> None:
        """Clear this instance's key (a clean stop: its partitions move elsewhere,
        and their next owner's partial covers them)."""
        try:
            if self.group is not None and producer is not None and self.last_partial is not None:
                with contextlib.suppress(KafkaError, TimeoutError):
                    async with asyncio.timeout(TOMBSTONE_TIMEOUT_S):
                        key = self.instance.encode()
                        fut = await producer.send(self.topic, key=key, value=None)
                        await fut
        finally:
            await asyncio.to_thread(self.worker.close)
            if self.feed is not None:
                await self.feed.stop()

    # ------------------------------------------------------------ running
    async def run(
        self,
        *,
        ready: asyncio.Event,
        stop: asyncio.Event,
        snapshot: Callable[[], Awaitable[tuple[BookSnapshot, Sequence[int]]]],
        publish_alerts: Callable[[list[Any]], Awaitable[None]],
        producer: Callable[[], AIOKafkaProducer | None],
    ) -> None:
        loop = asyncio.get_running_loop()
        next_map = next_cascade = 0.0
        try:
            async with asyncio.TaskGroup() as tg:
                if self.feed is not None:
                    tg.create_task(self.feed.run(stop), name="partials-fetch")
                while not stop.is_set():
                    if not ready.is_set():  # the map of a half-built book means nothing
                        await _sleep(stop, 0.5)
                        continue
                    now = loop.time()
                    if now >= min(next_map, next_cascade):
                        do_map, do_cascades = now >= next_map, now >= next_cascade
                        if do_map:
                            next_map = now + self.config.map_interval_s
                        if do_cascades:
                            next_cascade = now + self.config.cascade_interval_s
                        try:
                            await self._round(
                                snapshot, publish_alerts, producer(),
                                do_map=do_map, do_cascades=do_cascades,
                            )  # fmt: skip
                        except asyncio.CancelledError:
                            raise
                        except Exception as exc:
                            self.errors.inc()
                            log.error("market round failed", error=repr(exc), exc_info=True)
                    await _sleep(stop, max(0.05, min(next_map, next_cascade) - loop.time()))
        finally:
            await asyncio.to_thread(self.worker.close)

    def job(self, owned: Sequence[int], *, do_map: bool, do_cascades: bool) -> RoundJob:
        """What one round asks of the worker."""
        cfg = self.config
        partial = None
        if do_map and self.group is not None:
            partial = PartialSpec(
                self.grid, self.instance, tuple(sorted(owned)), self.clock.now_ms()
            )
        cascades = None
        if do_cascades:
            cascades = CascadeSpec.of(cfg, self.risk.scenarios)
        return RoundJob(cfg.map_moves if do_map else None, partial, cascades)

    async def _round(
        self,
        snapshot: Callable[[], Awaitable[tuple[BookSnapshot, Sequence[int]]]],
        publish_alerts: Callable[[list[Any]], Awaitable[None]],
        producer: AIOKafkaProducer | None,
        *,
        do_map: bool,
        do_cascades: bool,
    ) -> None:
        snap, owned = await snapshot()
        job = self.job(owned, do_map=do_map, do_cascades=do_cascades)
        out = await asyncio.to_thread(self.worker.run, snap, job)
        self.worker_cpu.inc(out.cpu_s)
        if out.map is not None:
            self.risk.metrics.export_map(out.map)
        if out.partial is not None:
            await self._share(out.partial, producer)
        if do_cascades:
            alerts = self._cascades(snap, owned, out.cascades)
            if alerts:
                await publish_alerts(alerts)

    async def _share(self, part: PartialMarket, producer: AIOKafkaProducer | None) -> None:
        """Publish this instance's partial and refresh the group view with it."""
        assert self.group is not None
        self.last_partial = part
        if producer is not None:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                key = self.instance.encode()
                fut = await producer.send(self.topic, key=key, value=to_wire(part))
                await fut
        # Our own partial as computed now (the topic's copy may not be back yet).
        others = {} if self.feed is None else dict(self.feed.latest)
        others[self.instance] = part
        self.last_group = await asyncio.to_thread(
            self.group.refresh, others.values(), self.clock.now_ms()
        )

    def _cascades(
        self, snap: BookSnapshot, owned: Sequence[int], results: Mapping[str, CascadeResult]
    ) -> list[Any]:
        own = list(self.risk.record_cascades(results, snap.ts).alerts)  # gauges, whatever the mode
        group = self.last_group
        mode = "group" if group is not None and len(group.merged.instances) > 1 else "own"
        if mode != self._mode:
            self._mode = mode
            watch = self.group_watch if mode == "group" else self.risk.watch
            watch.reset()
            log.info("cascade alerts", mode=mode)
            if mode == "own":
                own = list(self.risk.record_cascades(results, snap.ts).alerts)
        if mode == "own":
            return own
        if group is None or 0 not in owned:
            return []  # the owner of partition 0 speaks for the market
        out = []
        for label, by_bound in group.cascades.items():
            alert = self.group_watch.observe(label, by_bound["lower"], group.merged.ts)
            if alert is not None:
                out.append(alert)
        return out


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


__all__ = ["MarketJob"]
