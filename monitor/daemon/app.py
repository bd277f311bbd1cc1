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
loop. State is kept per account-events partition (its accounts, its next
offset, their alert state) plus this instance's prices
(:mod:`monitor.checkpoint.statedir`), written by :meth:`Daemon.checkpoint`, the
one place that orders apply -> deliveries -> snapshot -> commit. State follows
the partitions: on assignment the book drops the accounts of partitions that
went elsewhere and loads the snapshots of those that arrived (or rebuilds them
from the beginning of the compacted topic).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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

from monitor.cascade.snapshot import BookSnapshot, take_snapshot
from monitor.checkpoint import BookState, capture, restore
from monitor.checkpoint.offsets import OffsetLedger
from monitor.checkpoint.state import (
    check_compatible,
    concat_states,
    keep_accounts,
    select_accounts,
    split_accounts,
)
from monitor.checkpoint.statedir import StateDir, Written
from monitor.clock import Clock, WallClock
from monitor.config import Config
from monitor.daemon import gctune
from monitor.daemon.dlq import DeadLetters
from monitor.daemon.health import Health, Verdict
from monitor.daemon.http import HttpServer
from monitor.daemon.market import MarketJob
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
        self.instance = config.instance.name
        self.state_dir = StateDir(config.state.dir, self.instance)
        self.health = Health(self.clock, config.health.stall_after_s)
        self.tick_queue = TickQueue()
        high = config.kafka.event_queue_max_messages
        self.event_queue = EventQueue(high_water=high, low_water=high // 2)
        self.ledger: OffsetLedger[TopicPartition] = OffsetLedger()
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
        self.market = (
            MarketJob(self.params, config.market, self.registry, self.clock,
                      instance=self.instance, partials_topic=config.topics.partials)
            if config.market is not None
            else None
        )  # fmt: skip
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

    @property
    def offsets(self) -> dict[TopicPartition, int]:
        """The next offset of every consumed partition whose work is finished."""
        return self.ledger.finished

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
                        tg.create_task(
                            self.market.run(
                                ready=self.ready,
                                stop=self.stopping,
                                snapshot=self._market_snapshot,
                                publish_alerts=self._publish_market_alerts,
                                producer=lambda: self.producer,
                            ),
                            name="market-risk",
                        )
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
            state_dir=str(self.state_dir.root),
            instance=self.instance,
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
        if self.market is not None:
            self.market.attach(cfg.kafka)
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
            instance = ""
            if getattr(mqtt, "instance_topics", False):
                instance = self.instance
                if self.instance not in mqtt.client_id:  # one connection per client id
                    cid = f"{mqtt.client_id}-{self.instance}"
                    mqtt = dataclasses.replace(mqtt, client_id=cid)
            sinks.append(
                cls(mqtt, clock=self.clock, registry=self.registry, summary=summary,
                    instance=instance)
            )  # fmt: skip
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
        """Prepare the state directory and restore this instance's prices (marks and
        the next offset of every prices partition). The accounts come with their
        partitions, when the group assigns them (:meth:`_on_assigned`)."""
        self.state_dir.prepare()
        store = self.state_dir.prices_store()
        loaded = store.load(self.clock.now_ms())
        if loaded.problem is not None:
            log.error(
                "prices snapshot unusable, set aside; reading prices from the beginning",
                problem=loaded.problem,
                set_aside=str(loaded.set_aside) if loaded.set_aside else None,
            )
        state = loaded.state
        if state is not None:
            try:
                book = restore(state, self.params, self.thresholds)
            except StateError as exc:
                log.error("prices snapshot unusable; reading prices from the beginning",
                          problem=str(exc))  # fmt: skip
            else:
                self.engine.replace_book(book)
                prices = self.topics.prices
                for (t, p), o in state.offsets.items():
                    if t == prices:
                        self.ledger.reset(TopicPartition(t, p), o)
                self.last_snapshot_ms = state.created_ms
                log.info(
                    "prices loaded",
                    partitions=len(self.offsets),
                    snapshot_age_s=round((self.clock.now_ms() - state.created_ms) / 1000, 3),
                )
        if state is None:
            log.info("no prices snapshot: reading prices from the beginning")
        self.health.state_loaded = True

    def _note_accounts(self, start: int, end: int, partition: int) -> None:
        if end <= start:
            return
        if end > self._acct_part.shape[0]:
            grown = np.full(max(end, 2 * self._acct_part.shape[0]), -1, dtype=np.int64)
            grown[: self._acct_part.shape[0]] = self._acct_part
            self._acct_part = grown
        self._acct_part[start:end] = partition

    def _held(self) -> set[TopicPartition]:
        """The account-events partitions whose state is in the book (offset known)."""
        topic = self.topics.account_events
        return {tp for tp in self.offsets if tp.topic == topic}

    def _load_partitions(self, tps: set[TopicPartition]) -> dict[TopicPartition, BookState]:
        """The snapshots of ``tps`` that exist and are sound (the rest are rebuilt)."""
        out: dict[TopicPartition, BookState] = {}
        now = self.clock.now_ms()
        for tp in sorted(tps):
            try:
                loaded = self.state_dir.load_partition(tp.topic, tp.partition, now)
                if loaded.state is not None:
                    check_compatible(loaded.state, self.params)
            except StateError as exc:
                log.error("partition snapshot unusable; rebuilding the partition",
                          partition=tp.partition, problem=str(exc))  # fmt: skip
                continue
            if loaded.problem is not None:
                log.error(
                    "partition snapshot unusable, set aside; rebuilding the partition",
                    partition=tp.partition,
                    problem=loaded.problem,
                    set_aside=str(loaded.set_aside) if loaded.set_aside else None,
                )
            if loaded.state is not None:
                out[tp] = loaded.state
        return out

    def _reshape_book(
        self, keep: set[TopicPartition], loaded: dict[TopicPartition, BookState]
    ) -> list[str]:
        """The book with only the accounts of ``keep`` plus those of the ``loaded``
        partition snapshots (prices stay this instance's own); returns the ids of
        the accounts dropped."""
        book = self.engine.book
        n = book.n_accounts
        part = self._acct_part[:n]
        mask = np.isin(part, np.fromiter((tp.partition for tp in keep), np.int64, len(keep)))
        if mask.all() and not loaded:
            return []
        ids = np.asarray(book.account_ids, dtype=object)
        dropped: list[str] = ids[~mask].tolist() if n else []
        base = keep_accounts(capture(book, account_extras={"partition": part}), mask)
        others = []
        for tp, st in sorted(loaded.items()):
            col = np.full(st.n_accounts, tp.partition, dtype=np.int64)
            others.append(dataclasses.replace(st, account_extras={"partition": col}))
        merged = concat_states(base, others)
        self.engine.replace_book(restore(merged, self.params, self.thresholds))
        self._acct_part = np.full(max(1024, merged.n_accounts), -1, dtype=np.int64)
        self._acct_part[: merged.n_accounts] = merged.account_extras["partition"]
        log.info(
            "book reshaped",
            dropped=int(n - mask.sum()),
            kept=int(mask.sum()),
            loaded={tp.partition: st.n_accounts for tp, st in sorted(loaded.items())},
        )
        return dropped

    def _carry_alert_state(
        self, dropped: list[str], loaded: dict[TopicPartition, BookState]
    ) -> None:
        """Forget the alert state of accounts that left; take over the state the
        loaded snapshots carry (what their last owner had told consumers), so
        what was firing is resolved, not re-fired or forgotten."""
        alerts: Any = self.engine.alerts
        if alerts is None or not hasattr(alerts, "import_state"):
            return
        if dropped:
            alerts.forget(dropped)
        for tp, st in sorted(loaded.items()):
            state = st.meta.get("alerts")
            if not state:
                continue
            try:
                alerts.import_state(self.engine.book, state)
            except StateError as exc:
                log.error("alert state of a partition snapshot unusable; starting afresh",
                          partition=tp.partition, problem=str(exc))  # fmt: skip

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        """A new assignment: drop the accounts of partitions gone elsewhere, load the
        snapshots of partitions new here (or rebuild them from the beginning), seek
        every assigned partition to the offset after what the book holds."""
        assert self.events is not None
        topic = self.topics.account_events
        async with self._apply_lock:
            # Queued chunks were fetched under the old assignment: every partition is
            # re-read below from the offset after what was applied.
            self.event_queue.clear()
            held = self._held()
            keep = held & assigned
            loaded = self._load_partitions(assigned - keep)
            rebuild = assigned - keep - set(loaded)
            dropped = self._reshape_book(keep, loaded)
            self._carry_alert_state(dropped, loaded)
            for tp in held - keep:
                self.ledger.forget(tp)
            for tp, st in loaded.items():
                self.ledger.reset(tp, st.offsets[(tp.topic, tp.partition)])
            # What the group already committed: a commit never goes below it (a
            # partition rebuilt from the beginning commits only once it passes it).
            self.ledger.keep_committed(assigned)
            for tp in assigned:
                with contextlib.suppress(KafkaError):
                    self.ledger.group_has(tp, await self.events.committed(tp))
            for tp in keep | set(loaded):
                self.events.seek(tp, self.offsets[tp])
            await self.events.seek_to_beginning(rebuild)
            self.owned = set(assigned)
            self.events.assigned_once = True
            self.events.reset_catch_up()
            alerts: list[Any] = []
            if rebuild and self.health.caught_up:
                # Rebuilding partitions: hold alerts until caught up again.
                self.engine.live = False
                self.health.set_ready(False, f"rebuilding {len(rebuild)} partitions")
                self.ready.clear()
            elif self.engine.live and (loaded or held - keep):
                alerts = self.engine.go_live()
            if alerts:
                await self.engine.publish(alerts)
        log.info(
            "assigned",
            topic=topic,
            partitions=sorted(tp.partition for tp in assigned),
            kept=sorted(tp.partition for tp in keep),
            loaded={tp.partition: self.offsets[tp] for tp in sorted(loaded)},
            from_beginning=sorted(tp.partition for tp in rebuild),
        )

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Checkpoint (and commit) before the partitions go, within a budget below
        ``max_poll_interval_ms``. The accounts stay until the new assignment says
        which partitions really left: aiokafka rebalances eagerly (every partition
        is revoked, most come straight back), and reloading those would be waste."""
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
            self.event_queue.clear()

    # ================================================================ applying
    async def _apply_loop(self) -> None:
        gctune.for_streaming()  # the per-record garbage, see monitor.daemon.gctune
        next_poll = self.clock.now_ms()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), PROBE_INTERVAL_S)
            self._wake.clear()
            async with self._apply_lock:
                await self._apply_pending()
                was_ready = self.ready.is_set()
                alerts = self._update_readiness()
                if self.ready.is_set() and not was_ready:
                    gctune.freeze_long_lived()  # the rebuilt book: out of the collector's way
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
        self.ledger.advance(tp, next_offset)

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
        3. snapshot: one file per owned account-events partition (its accounts, its
           next offset, their alert state) and one for this instance's prices (marks
           and the prices offsets), each written atomically;
        4. commit: the offsets of the account-events partitions we own whose snapshot
           is on disk, to the consumer group, only forwards.
        """
        async with self._ckpt_lock:
            t0 = time.perf_counter()
            now = self.clock.now_ms()
            topic = self.topics.account_events
            async with self._apply_lock:
                # 1. apply (the lock) -- and re-derive the incremental sums exactly
                # (and forget closes past their retention, in event time)
                book = self.engine.book
                book.resync()
                retention_ms = int(self.config.state.close_retention_s * 1000)
                forgotten = book.forget_closes_before(book.last_event_ts - retention_ms)
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
                part = self._acct_part[: book.n_accounts].copy()
                state = capture(book, created_ms=now, account_extras={"partition": part})
                partitions = {
                    tp.partition: o
                    for tp, o in self.offsets.items()
                    if tp.topic == topic and tp in self.owned
                }
                metas = self._partition_meta(part, partitions)
                price_offsets = {
                    (tp.topic, tp.partition): o
                    for tp, o in self.offsets.items()
                    if tp.topic == self.topics.prices
                }
            # 3. snapshot (off the event loop; the copy above is consistent)
            t1 = time.perf_counter()
            try:
                written = await asyncio.to_thread(
                    self._write_state, state, partitions, metas, price_offsets
                )
            except StateError as exc:
                log.error("checkpoint failed: snapshot not written", reason=reason, error=str(exc))
                return False
            self.metrics.snapshot_seconds.observe(time.perf_counter() - t1)
            self.last_snapshot_ms = now
            # 4. commit (a partition whose file on disk is newer is another
            # instance's now: it is not committed from here)
            commit = self.ledger.due({
                TopicPartition(topic, w.partition): partitions[w.partition]
                for w in written
                if w.skipped_for is None
            })  # fmt: skip
            for w in written:
                if w.skipped_for is not None:
                    log.warning("partition snapshot on disk is newer: another instance owns it",
                                partition=w.partition, ours=partitions[w.partition],
                                on_disk=w.skipped_for)  # fmt: skip
            committed = True
            if commit and self.events is not None:
                try:
                    async with asyncio.timeout(COMMIT_TIMEOUT_S):
                        await self.events.commit(commit)
                    self.ledger.confirm(commit)
                except (KafkaError, TimeoutError) as exc:
                    committed = False
                    log.warning(
                        "commit failed (retried at the next checkpoint)",
                        error=str(exc) or type(exc).__name__,
                    )
            dt = time.perf_counter() - t0
            self.checkpoints += 1
            log.info(
                "checkpoint",
                reason=reason,
                accounts=state.n_accounts,
                positions=state.n_positions,
                bytes=sum(w.size for w in written),
                seconds=round(dt, 4),
                committed=committed,
                closes_remembered=book.remembered_closes,
                closes_forgotten=forgotten,
                offsets={f"{tp.topic}/{tp.partition}": o for tp, o in sorted(self.offsets.items())},
            )
            return True

    def _partition_meta(self, part: I64, partitions: dict[int, int]) -> dict[int, dict[str, Any]]:
        """What goes beside each partition's accounts in its snapshot: the alert
        engine's state of those accounts (so a restart, or the partition's next
        owner, resolves what was firing instead of forgetting it)."""
        alerts = self.engine.alerts
        export = getattr(alerts, "export_state", None)
        if export is None:
            return {p: {} for p in partitions}
        book = self.engine.book
        out: dict[int, dict[str, Any]] = {}
        for p in partitions:
            slots = np.flatnonzero(part == p).astype(np.int64)
            out[p] = {"alerts": export(book, slots)}
        return out

    def _write_state(
        self,
        state: BookState,
        partitions: dict[int, int],
        metas: dict[int, dict[str, Any]],
        price_offsets: dict[tuple[str, int], int],
    ) -> list[Written]:
        """Step 3 of :meth:`checkpoint`, in a worker thread."""
        topic = self.topics.account_events
        by_part = split_accounts(state, state.account_extras["partition"])
        written = []
        for p, offset in sorted(partitions.items()):
            st = by_part.get(p)
            if st is None:
                st = select_accounts(state, [])
            st = dataclasses.replace(
                st, offsets={(topic, p): offset}, meta=metas.get(p, {}), account_extras={}
            )
            written.append(self.state_dir.write_partition(topic, p, st))
        prices = dataclasses.replace(
            select_accounts(state, []), offsets=price_offsets, account_extras={}
        )
        self.state_dir.prices_store().write(prices)
        return written

    # ================================================================ market
    async def _market_snapshot(self) -> tuple[BookSnapshot, list[int]]:
        """A copy of the book for the market job, taken between batches."""
        async with self._apply_lock:
            owned = sorted(tp.partition for tp in self.owned)
            return take_snapshot(self.engine.book), owned

    async def _publish_market_alerts(self, alerts: list[Any]) -> None:
        if self.engine.alerts is not None and hasattr(self.engine.alerts, "admit"):
            alerts = self.engine.alerts.admit(alerts)
        async with self._apply_lock:
            await self.engine.publish(alerts)

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
        # Which instance answers and what it owns: what an operator (or a test)
        # needs to see how the group shared out the partitions.
        return self.health.readiness(), {
            "instance": self.instance,
            "partitions": sorted(tp.partition for tp in self.owned),
            "accounts": self.engine.book.n_accounts,
        }

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
        if self.market is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self.market.close(self.producer)
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
