"""`monitor run`: Kafka in, the engine, alerts out, snapshots, health and metrics.

Tasks (one :class:`asyncio.TaskGroup`, every task named):

- ``prices-fetch``: every partition of ``prices``, decoded, conflated to the
  latest tick per symbol (:class:`~monitor.sources.kafka.PriceFeed`);
- ``events-fetch``: ``account-events`` in the consumer group, decoded, queued
  per partition in order, pausing its partitions when the queue is full
  (:class:`~monitor.sources.kafka.EventFeed`);
- ``apply``: takes whatever is queued, applies it through the
  :class:`~monitor.engine.Engine`, sends rejects to the DLQ and alerts to the
  sinks, and records the next offset of every partition it finished;
- ``checkpoint-timer``: :meth:`Daemon.checkpoint` every ``snapshot_interval_s``;
- ``broker-probe``: a metadata request every second (broker reachability for
  ``/healthz``), and the alert engine's periodic pass (stale prices).

The HTTP server (``/metrics``, ``/healthz``, ``/readyz``) runs on the same
loop. State is the book plus the next offset of every consumed partition,
written together by :meth:`Daemon.checkpoint`, the one place that orders
apply -> deliveries -> snapshot -> commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from monitor.checkpoint import SnapshotStore, capture, restore
from monitor.checkpoint.state import keep_accounts
from monitor.clock import Clock, WallClock
from monitor.config import Config
from monitor.daemon.dlq import DeadLetters
from monitor.daemon.health import Health, Verdict
from monitor.daemon.http import HttpServer
from monitor.engine import AlertSink, DeliveryError, Engine
from monitor.errors import MonitorError, StateError
from monitor.events.decode import Rejection
from monitor.instruments import RiskParams, load_instruments
from monitor.logs import get_logger
from monitor.metrics import BookCollector, DaemonStatus, Metrics, StatusCollector
from monitor.risk.levels import Thresholds
from monitor.sinks.kafka import KafkaAlertSink
from monitor.sources.kafka import (
    EventFeed,
    EventQueue,
    PriceFeed,
    TickQueue,
    client_options,
)

log = get_logger("monitor.daemon")

PROBE_INTERVAL_S = 1.0
FLUSH_TIMEOUT_S = 10.0
SHUTDOWN_CHECKPOINT_S = 30.0
CLOSE_TIMEOUT_S = 5.0
COMMIT_TIMEOUT_S = 5.0
CONNECT_BACKOFF_MAX_S = 10.0
I64 = npt.NDArray[np.int64]


def _optional(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


class Daemon:
    """The long-running monitor. ``await Daemon(config).run()`` returns an exit code."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        params: RiskParams | None = None,
        install_signal_handlers: bool = True,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or WallClock()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.params = params or load_instruments(config.instruments.file or None)
        alerts_cfg = config.alerts
        self.thresholds = alerts_cfg.thresholds() if alerts_cfg is not None else Thresholds()
        engine_cls = _optional("monitor.alerts.engine", "AlertEngine")
        alert_engine = (
            engine_cls(alerts_cfg, self.clock, self.registry)
            if engine_cls is not None and alerts_cfg is not None
            else None
        )
        self.engine = Engine(
            self.params,
            self.clock,
            thresholds=self.thresholds,
            alerts=alert_engine,
            metrics=self.metrics,
            live=False,
        )
        self.topics = config.topics
        self.store = SnapshotStore(config.state.dir)
        self.health = Health(self.clock, config.health.stall_after_s)
        self.tick_queue = TickQueue()
        self.event_queue = EventQueue()
        self.offsets: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.owned: set[TopicPartition] = set()
        self._acct_part: I64 = np.full(1024, -1, dtype=np.int64)
        self.last_snapshot_ms: int | None = None
        self.checkpoints = 0
        self.ready = asyncio.Event()
        self.stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._apply_lock = asyncio.Lock()
        self._ckpt_lock = asyncio.Lock()
        self._feeds_running = 0
        self._final_done = False
        self._signals = install_signal_handlers
        self._counted = {"prices": 0, "events": 0}
        self.producer: AIOKafkaProducer | None = None
        self.dlq = DeadLetters(None, self.topics.dlq, self.metrics, self.clock)
        self.http = HttpServer(
            config.http.host, config.http.port, self.registry, self._liveness, self._readiness
        )
        self.prices: PriceFeed | None = None
        self.events: EventFeed | None = None
        market_cls = _optional("monitor.cascade.service", "MarketRisk")
        self.market = (
            market_cls(self.params, config.market, self.registry)
            if market_cls is not None and config.market is not None
            else None
        )
        self.registry.register(BookCollector(lambda: self.engine.book, self.clock.now_ms))
        self.registry.register(StatusCollector(self.status))
        depth = self.metrics.queue_depth
        depth.labels(queue="account_events").set_function(lambda: self.event_queue.depth)
        depth.labels(queue="prices").set_function(lambda: len(self.tick_queue))
        depth.labels(queue="dlq").set_function(lambda: self.dlq.pending)
        self._applied = {
            t: self.metrics.applied.labels(topic=t)
            for t in (self.topics.prices, self.topics.account_events)
        }
        self._consumed = {
            t: self.metrics.consumed.labels(topic=t)
            for t in (self.topics.prices, self.topics.account_events)
        }

    # ================================================================ running
    def request_stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping")
            self.health.phase = "stopping"
        self.stopping.set()
        self._wake.set()

    async def run(self) -> int:
        """Start, run until SIGTERM/SIGINT (or :meth:`request_stop`), shut down."""
        loop = asyncio.get_running_loop()
        if self._signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.request_stop)
        crashed = False
        try:
            await self._start()
            if not self.stopping.is_set():
                self.health.phase = "running"
                log.info("running", http_port=self.http.port)
                async with asyncio.TaskGroup() as tg:
                    assert self.prices is not None and self.events is not None
                    tg.create_task(self._feed(self.prices.run), name="prices-fetch")
                    tg.create_task(self._feed(self.events.run), name="events-fetch")
                    tg.create_task(self._apply_loop(), name="apply")
                    tg.create_task(self._checkpoint_loop(), name="checkpoint-timer")
                    tg.create_task(self._probe_loop(), name="broker-probe")
                    if self.market is not None:
                        tg.create_task(self._market_loop(), name="market-risk")
        except MonitorError as exc:
            # An operator error (a port in use, an unwritable state directory).
            crashed = True
            log.error("cannot run", error=str(exc))
            self.health.fatal = str(exc)
        except Exception as exc:
            # A bug, not bad input (that goes to the DLQ): no checkpoint of a book
            # that may be half-updated; the restart resumes from the last snapshot.
            crashed = True
            log.error("crashed", error=repr(exc), exc_info=True)
            self.health.fatal = f"crashed: {exc!r}"
        finally:
            rc = await self._shutdown(checkpoint=not crashed)
            if self._signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.remove_signal_handler(sig)
        return 1 if crashed else rc

    async def _start(self) -> None:
        cfg = self.config
        await self.http.start()
        log.info(
            "started",
            http_port=self.http.port,
            bootstrap=cfg.kafka.bootstrap_servers,
            prices=self.topics.prices,
            account_events=self.topics.account_events,
            group=cfg.kafka.group_id,
            state_dir=str(self.store.dir),
        )
        self._load_state()
        self.producer = await self._connect(
            "producer",
            lambda: AIOKafkaProducer(**client_options(cfg.kafka), acks="all", linger_ms=2),
        )
        if self.producer is None:
            return
        self.dlq = DeadLetters(self.producer, self.topics.dlq, self.metrics, self.clock)
        self.engine.sinks = self._sinks(self.producer)
        await self.engine.start()
        self.prices = PriceFeed(
            cfg.kafka,
            self.topics.prices,
            self.engine.decoder,
            self.tick_queue,
            self.dlq.add,
            clock=self.clock,
            on_poll=self.health.polled,
            wake=self._wake,
        )
        self.events = EventFeed(
            cfg.kafka,
            self.topics.account_events,
            self.engine.decoder,
            self.event_queue,
            self.dlq.add,
            clock=self.clock,
            on_poll=self.health.polled,
            wake=self._wake,
            on_revoked=self._on_revoked,
            on_assigned=self._on_assigned,
        )
        for feed in (self.prices, self.events):
            feed.broker_ok = lambda: self.health.broker_error is None
        price_offsets = {
            tp.partition: o for tp, o in self.offsets.items() if tp.topic == self.topics.prices
        }
        while not self.stopping.is_set():
            try:
                await self.prices.start(price_offsets, self.stopping)
                await self.events.start()
                break
            except KafkaError as exc:
                self.health.broker_down(str(exc))
                await self._sleep(2.0)
        self.health.broker_ok()

    def _sinks(self, producer: AIOKafkaProducer) -> list[AlertSink]:
        sinks: list[AlertSink] = [KafkaAlertSink(self.topics.alerts, producer)]
        mqtt = self.config.mqtt
        if mqtt is not None and getattr(mqtt, "enabled", False):
            cls = _optional("monitor.sinks.mqtt", "MqttSink")
            if cls is None:
                raise MonitorError("[mqtt] enabled = true, but this build has no MQTT sink")
            summary = (
                (lambda: self.engine.alerts.summary(self.engine.book))  # type: ignore[union-attr]
                if hasattr(self.engine.alerts, "summary")
                else None
            )
            sinks.append(cls(mqtt, clock=self.clock, registry=self.registry, summary=summary))
        return sinks

    async def _connect(self, what: str, make: Callable[[], Any]) -> Any:
        """Start a client, retrying with capped, jittered backoff while the broker is down."""
        attempt = 0
        while not self.stopping.is_set():
            client = make()
            try:
                await client.start()
                return client
            except KafkaError as exc:
                with contextlib.suppress(Exception):
                    await client.stop()
                self.health.broker_down(f"{what}: {exc}")
                attempt += 1
                delay = min(
                    CONNECT_BACKOFF_MAX_S, float(np.random.uniform(0, 1.5 ** min(10, attempt)))
                )
                await self._sleep(delay)
        return None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _feed(self, run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        self._feeds_running += 1
        try:
            await run(self.stopping)
        finally:
            self._feeds_running -= 1
            self._wake.set()

    # ================================================================ state
    def _load_state(self) -> None:
        """Restore the snapshot if there is a good one; otherwise rebuild from the topics."""
        try:
            self.store.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(
                f"{self.store.dir}: cannot create the state directory ([state] dir): {exc}"
            ) from exc
        self.store.remove_temporaries()
        loaded = self.store.load(self.clock.now_ms())
        if loaded.problem is not None:
            log.error(
                "snapshot unusable, set aside; rebuilding from the topics",
                problem=loaded.problem,
                set_aside=str(loaded.set_aside) if loaded.set_aside else None,
            )
        state = loaded.state
        if state is not None:
            try:
                book = restore(state, self.params, self.thresholds)
            except StateError as exc:
                aside = self.store.path.with_name(
                    f"{self.store.path.name}.{self.clock.now_ms()}.corrupt"
                )
                with contextlib.suppress(OSError):
                    self.store.path.replace(aside)
                log.error(
                    "snapshot unusable, set aside; rebuilding",
                    problem=str(exc),
                    set_aside=str(aside),
                )
                state = None
            else:
                self.engine.replace_book(book)
                self.offsets = {TopicPartition(t, p): o for (t, p), o in state.offsets.items()}
                part = state.account_extras.get("partition")
                n = state.n_accounts
                self._acct_part = np.full(max(1024, n), -1, dtype=np.int64)
                if part is not None:
                    self._acct_part[:n] = part
                self.last_snapshot_ms = state.created_ms
                log.info(
                    "state loaded",
                    accounts=n,
                    positions=state.n_positions,
                    partitions=len(self.offsets),
                    snapshot_age_s=round((self.clock.now_ms() - state.created_ms) / 1000, 3),
                )
        if state is None:
            log.info("no snapshot: rebuilding the book from the beginning of the topics")
        self.health.state_loaded = True

    def _note_accounts(self, start: int, end: int, partition: int) -> None:
        if end <= start:
            return
        if end > self._acct_part.shape[0]:
            grown = np.full(max(end, 2 * self._acct_part.shape[0]), -1, dtype=np.int64)
            grown[: self._acct_part.shape[0]] = self._acct_part
            self._acct_part = grown
        self._acct_part[start:end] = partition

    def _keep_partitions(self, keep: set[int]) -> list[Any]:
        """Drop the accounts of every account-events partition not in ``keep``;
        returns the alerts of re-evaluating the kept accounts (when live)."""
        book = self.engine.book
        n = book.n_accounts
        part = self._acct_part[:n]
        mask = np.isin(part, np.fromiter(keep, dtype=np.int64, count=len(keep)))
        if mask.all():
            return []
        state = capture(book, account_extras={"partition": part})
        kept = keep_accounts(state, mask)
        self.engine.replace_book(restore(kept, self.params, self.thresholds))
        self._acct_part = np.full(max(1024, kept.n_accounts), -1, dtype=np.int64)
        self._acct_part[: kept.n_accounts] = kept.account_extras["partition"]
        log.info(
            "accounts of other partitions dropped",
            dropped=int(n - mask.sum()),
            kept=kept.n_accounts,
        )
        alerts = self.engine.alerts
        if alerts is None:
            return []
        # The alert engine keeps its state by account slot, and the slots were just
        # renumbered: start a fresh one (its metrics are shared on the registry)
        # and bring it in line with the book.
        fresh: Any = type(alerts)
        self.engine.alerts = fresh(self.config.alerts, self.clock, self.registry)
        return self.engine.go_live() if self.engine.live else []

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        assert self.events is not None
        topic = self.topics.account_events
        async with self._apply_lock:
            resume = {tp for tp in assigned if tp in self.offsets}
            rebuild = assigned - resume
            alerts = self._keep_partitions({tp.partition for tp in resume})
            if alerts:
                await self.engine.publish(alerts)
            for tp in [tp for tp in self.offsets if tp.topic == topic and tp not in resume]:
                del self.offsets[tp]
            for tp in resume:
                self.events.seek(tp, self.offsets[tp])
            await self.events.seek_to_beginning(rebuild)
            self.owned = set(assigned)
            self.events.assigned_once = True
            self.events.reset_catch_up()
            if rebuild and self.health.caught_up:
                # Rebuilding partitions: hold alerts until caught up again.
                self.engine.live = False
                self.health.set_ready(False, f"rebuilding {len(rebuild)} partitions")
                self.ready.clear()
        log.info(
            "assigned",
            topic=topic,
            partitions=sorted(tp.partition for tp in assigned),
            resumed={tp.partition: self.offsets[tp] for tp in resume},
            from_beginning=sorted(tp.partition for tp in rebuild),
        )

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        if self._final_done or not revoked:
            return
        log.info("revoked", partitions=sorted(tp.partition for tp in revoked))
        budget = max(1.0, min(60.0, self.config.kafka.max_poll_interval_ms / 2000))
        try:
            async with asyncio.timeout(budget):
                await self.checkpoint("revoked")
        except TimeoutError:
            log.error("checkpoint on revocation ran out of time", budget_s=budget)
        finally:
            self.owned -= revoked

    # ================================================================ applying
    async def _apply_loop(self) -> None:
        next_poll = self.clock.now_ms()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), PROBE_INTERVAL_S)
            self._wake.clear()
            async with self._apply_lock:
                await self._apply_pending()
                alerts = self._update_readiness()
                if alerts:
                    await self.engine.publish(alerts)
                if self.engine.live and self.clock.now_ms() >= next_poll:
                    next_poll = self.clock.now_ms() + int(PROBE_INTERVAL_S * 1000)
                    alerts = self.engine.poll()
                    if alerts:
                        await self.engine.publish(alerts)
            if self.stopping.is_set() and self._feeds_running == 0:
                async with self._apply_lock:
                    await self._apply_pending()
                return

    async def _apply_pending(self) -> None:
        """Apply everything queued: account events in partition order, then the ticks."""
        engine = self.engine
        ev_topic, px_topic = self.topics.account_events, self.topics.prices
        self._count_consumed()
        chunks = self.event_queue.take_all()
        ticks, tick_records, tick_offsets, received = self.tick_queue.take()
        alerts: list[Any] = []
        for ch in chunks:
            if ch.tp not in self.owned:
                continue  # revoked since it was fetched: its next owner reads it
            structlog.contextvars.bind_contextvars(
                topic=ev_topic, partition=ch.tp.partition, offset=ch.next_offset - 1
            )
            n0 = engine.book.n_accounts
            res = engine.apply(ch.events, evaluate=False)
            self._note_accounts(n0, engine.book.n_accounts, ch.tp.partition)
            self._reject_stale(ch.records, res.rejections)
            self._applied[ev_topic].inc(len(ch.events) - len(res.rejections))
            self._advance(ch.tp, ch.next_offset)
            alerts.extend(res.alerts)
        if ticks or tick_offsets or chunks:
            # The ticks, then one alert evaluation for everything this round applied.
            structlog.contextvars.bind_contextvars(topic=px_topic, partition=None, offset=None)
            res = engine.apply((), ticks, received_ms=received)
            self._reject_stale(tick_records, res.rejections)
            if ticks:
                self._applied[px_topic].inc(len(ticks) - len(res.rejections))
            for tp, o in tick_offsets.items():
                self._advance(tp, o)
            alerts.extend(res.alerts)
        structlog.contextvars.unbind_contextvars("topic", "partition", "offset")
        self.health.pending_since_ms = None  # progress: the apply stall clock restarts
        if alerts:
            await engine.publish(alerts)
        await self.dlq.pump()

    def _reject_stale(self, records: list[Any], rejections: list[tuple[int, Rejection]]) -> None:
        for i, r in rejections:
            self.dlq.add(records[i], r)

    def _advance(self, tp: TopicPartition, next_offset: int) -> None:
        """Record the next offset of a partition; it never moves backwards."""
        if next_offset > self.offsets.get(tp, -1):
            self.offsets[tp] = next_offset

    def _count_consumed(self) -> None:
        for name, feed, topic in (
            ("prices", self.prices, self.topics.prices),
            ("events", self.events, self.topics.account_events),
        ):
            if feed is not None and feed.consumed > self._counted[name]:
                self._consumed[topic].inc(feed.consumed - self._counted[name])
                self._counted[name] = feed.consumed

    def _update_readiness(self) -> list[Any]:
        """Turn ready once caught up; returns the alerts of going live."""
        if self.health.caught_up or self.prices is None or self.events is None:
            return []
        if not self.events.assigned_once:
            self.health.catch_up_detail = "waiting for a partition assignment"
            return []
        if self.prices.caught_up() and self.events.caught_up() and self.event_queue.depth == 0:
            self.health.set_ready(True)
            self.ready.set()
            return self.engine.go_live()
        behind = sum(self.prices.lag().values()) + sum(self.events.lag().values())
        self.health.catch_up_detail = f"catching up: {behind} messages behind"
        return []

    # ================================================================ checkpoint
    async def _checkpoint_loop(self) -> None:
        interval = self.config.state.snapshot_interval_s
        while not self.stopping.is_set():
            await self._sleep(interval)
            if self.stopping.is_set():
                return
            await self.checkpoint("interval")

    async def checkpoint(self, reason: str) -> bool:
        """The checkpoint sequence, in this order and nowhere else:

        1. apply: holding the apply lock, no batch is half applied; ``self.offsets``
           holds the next offset of every partition whose records are all applied
           (or rejected), and only those;
        2. deliveries: wait until every alert sink and the DLQ have confirmed what
           they were given (if not, stop here: nothing is written or committed);
        3. snapshot: the book and those offsets, together, written atomically;
        4. commit: the same offsets of the account-events partitions we own, to
           the consumer group, only forwards.
        """
        async with self._ckpt_lock:
            t0 = time.perf_counter()
            now = self.clock.now_ms()
            topic = self.topics.account_events
            async with self._apply_lock:
                # 1. apply (the lock) -- and re-derive the incremental sums exactly
                self.engine.book.resync()
                # 2. deliveries
                try:
                    await self.engine.flush(FLUSH_TIMEOUT_S)
                    await self.dlq.flush(FLUSH_TIMEOUT_S)
                except (DeliveryError, MonitorError, KafkaError) as exc:
                    log.error(
                        "checkpoint skipped: deliveries not confirmed",
                        reason=reason,
                        error=str(exc),
                    )
                    return False
                book = self.engine.book
                n = book.n_accounts
                state = capture(
                    book,
                    {(tp.topic, tp.partition): o for tp, o in self.offsets.items()},
                    created_ms=now,
                    account_extras={"partition": self._acct_part[:n]},
                )
                commit = {
                    tp: o
                    for tp, o in self.offsets.items()
                    if tp.topic == topic and tp in self.owned and o > self.committed.get(tp, -1)
                }
            # 3. snapshot (off the event loop; the copy above is consistent)
            try:
                size = await asyncio.to_thread(self.store.write, state)
            except StateError as exc:
                log.error("checkpoint failed: snapshot not written", reason=reason, error=str(exc))
                return False
            self.last_snapshot_ms = now
            # 4. commit
            committed = True
            if commit and self.events is not None:
                try:
                    async with asyncio.timeout(COMMIT_TIMEOUT_S):
                        await self.events.commit(commit)
                    self.committed.update(commit)
                except (KafkaError, TimeoutError) as exc:
                    committed = False
                    log.warning(
                        "commit failed (retried at the next checkpoint)",
                        error=str(exc) or type(exc).__name__,
                    )
            dt = time.perf_counter() - t0
            self.metrics.snapshot_seconds.observe(dt)
            self.checkpoints += 1
            log.info(
                "checkpoint",
                reason=reason,
                accounts=state.n_accounts,
                positions=state.n_positions,
                bytes=size,
                seconds=round(dt, 4),
                committed=committed,
                offsets={f"{tp.topic}/{tp.partition}": o for tp, o in sorted(self.offsets.items())},
            )
            return True

    # ================================================================ market
    async def _market_loop(self) -> None:
        """Liquidation map and standard cascades on snapshots of the live book: the
        copy is taken on the loop (between batches), the work runs in a thread."""
        from monitor.cascade.snapshot import take_snapshot

        assert self.market is not None
        cfg = self.config.market
        map_every = float(cfg.map_interval_s)
        cascade_every = float(cfg.cascade_interval_s)
        next_map = next_cascade = 0.0
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            if not self.ready.is_set():  # the map of a half-built book means nothing
                await self._sleep(0.5)
                continue
            now = loop.time()
            if now >= min(next_map, next_cascade):
                async with self._apply_lock:
                    snap = take_snapshot(self.engine.book)
                if now >= next_map:
                    next_map = now + map_every
                    await asyncio.to_thread(self.market.refresh_map, snap)
                if now >= next_cascade:
                    next_cascade = now + cascade_every
                    report = await asyncio.to_thread(self.market.run_cascades, snap)
                    if report.alerts:
                        alerts = list(report.alerts)
                        if self.engine.alerts is not None and hasattr(self.engine.alerts, "admit"):
                            alerts = self.engine.alerts.admit(alerts)
                        async with self._apply_lock:
                            await self.engine.publish(alerts)
            await self._sleep(max(0.05, min(next_map, next_cascade) - loop.time()))

    # ================================================================ health
    async def _probe_loop(self) -> None:
        while not self.stopping.is_set():
            if self.prices is not None:
                try:
                    async with asyncio.timeout(5.0):
                        await self.prices.consumer.topics()
                    self.health.broker_ok()
                except (KafkaError, TimeoutError, OSError) as exc:
                    self.health.broker_down(str(exc) or type(exc).__name__)
            self._pending_since()
            self.health.liveness()  # logs transitions (stalled / recovered)
            await self._sleep(PROBE_INTERVAL_S)

    def _pending_since(self) -> None:
        q = self.event_queue
        if q.depth or len(self.tick_queue):
            if self.health.pending_since_ms is None:
                self.health.pending_since_ms = self.clock.now_ms()
        else:
            self.health.pending_since_ms = None

    def status(self) -> DaemonStatus:
        self._pending_since()
        now = self.clock.now_ms()
        lag: dict[tuple[str, int], int] = {}
        for feed in (self.prices, self.events):
            if feed is not None:
                lag.update(feed.lag())
        return DaemonStatus(
            ready=self.health.readiness().ok,
            healthy=self.health.liveness().ok,
            seconds_since_last_poll=self.health.seconds_since_last_poll(),
            snapshot_age_seconds=(
                float("inf")
                if self.last_snapshot_ms is None
                else max(0.0, (now - self.last_snapshot_ms) / 1000)
            ),
            lag=lag,
        )

    def _liveness(self) -> tuple[Verdict, dict[str, object]]:
        self._pending_since()
        v = self.health.liveness()
        since = self.health.seconds_since_last_poll()
        return v, {"seconds_since_last_poll": None if since == float("inf") else round(since, 3)}

    def _readiness(self) -> tuple[Verdict, dict[str, object]]:
        return self.health.readiness(), {}

    # ================================================================ shutdown
    async def _shutdown(self, *, checkpoint: bool) -> int:
        self.health.phase = "stopping"
        self.stopping.set()
        ok = checkpoint
        if checkpoint and self.events is not None:
            try:
                async with asyncio.timeout(SHUTDOWN_CHECKPOINT_S):
                    ok = await self.checkpoint("shutdown")
            except TimeoutError:
                ok = False
                log.error("final checkpoint ran out of time", budget_s=SHUTDOWN_CHECKPOINT_S)
        self._final_done = True
        for name, close in (
            ("events consumer", self.events.stop if self.events else None),
            ("prices consumer", self.prices.stop if self.prices else None),
            ("sinks", self.engine.close),
            ("producer", self.producer.stop if self.producer else None),
            ("http", self.http.close),
        ):
            if close is None:
                continue
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await close()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # aiokafka can leak a CancelledError from its own tasks on stop while the
                # broker is down; that is not a request to cancel us.
                log.warning("close failed", what=name, error="cancelled inside the client")
            except Exception as exc:
                log.warning("close failed", what=name, error=repr(exc))
        log.info("stopped", clean=ok, checkpoints=self.checkpoints)
        return 0 if ok else 1


def run_daemon(config: Config) -> int:
    """Run the daemon on uvloop (where available) until it is told to stop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(Daemon(config).run())
    return uvloop.run(_main(config))


async def _main(config: Config) -> int:
    return await Daemon(config).run()
