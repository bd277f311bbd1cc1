"""The MQTT sink against a real Mosquitto: a contagion scenario driven through
the book and the alert engine, the retained summary, the last will, and a
broker restart in the middle of the stream."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import orjson
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from monitor.alerts.bench import sample_alerts
from monitor.alerts.config import AlertsConfig, MqttConfig
from monitor.alerts.engine import AlertEngine
from monitor.alerts.model import Alert, batch_from_json_bytes, from_json_bytes
from monitor.book import MarginBook
from monitor.clock import ManualClock
from monitor.events import BalanceEvent, PositionEvent, Tick
from monitor.instruments import RiskParams
from monitor.sinks.mqtt import MqttSink
from tests.support.mosquitto import Mosquitto, mosquitto

__all__ = ["mosquitto"]  # the broker fixture, imported so pytest finds it

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


@dataclass
class Observer:
    """A subscriber with a persistent session (it survives a broker restart and
    gets what was published while it was away)."""

    broker: Mosquitto
    prefix: str
    messages: list[Received] = field(default_factory=list)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    _new: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        ident = f"observer-{uuid.uuid4().hex[:8]}"
        while True:
            try:
                async with aiomqtt.Client(
                    self.broker.host, self.broker.port, identifier=ident, clean_session=False
                ) as client:
                    await client.subscribe(f"{self.prefix}/#", qos=1)
                    self.subscribed.set()
                    async for m in client.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else b""
                        self.messages.append(Received(m.topic.value, payload, m.retain))
                        self._new.set()
            except aiomqtt.MqttError:
                self.subscribed.clear()
                await asyncio.sleep(0.05)

    async def wait_for(self, done: Callable[[list[Received]], bool], timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while not done(self.messages):
                self._new.clear()
                await self._new.wait()

    def alerts(self) -> list[tuple[str, Alert]]:
        """(topic, alert) in arrival order, batches unpacked, duplicates dropped."""
        out: list[tuple[str, Alert]] = []
        seen: set[str] = set()
        for m in self.messages:
            if "/alerts/" not in m.topic:
                continue
            batch = m.topic.endswith("/alerts/batch")
            items = batch_from_json_bytes(m.payload) if batch else [from_json_bytes(m.payload)]
            for a in items:
                if a.id not in seen:
                    seen.add(a.id)
                    out.append((m.topic, a))
        return out

    def last(self, topic: str) -> Received | None:
        hits = [m for m in self.messages if m.topic == topic]
        return hits[-1] if hits else None


class Monitor:
    """Book + alert engine on a manual clock, feeding an MQTT sink."""

    def __init__(self, params: RiskParams, sink_config: MqttConfig) -> None:
        self.config = AlertsConfig(min_interval_s=0.0, stale_price_s=3600.0)
        self.book = MarginBook(params, self.config.thresholds())
        self.clock = ManualClock(1_700_000_000_000)
        self.engine = AlertEngine(self.config, self.clock, CollectorRegistry())
        self.registry = CollectorRegistry()
        self.sink = MqttSink(
            sink_config,
            clock=self.clock,
            registry=self.registry,
            summary=lambda: self.engine.summary(self.book),
        )
        self.sent: list[Alert] = []

    async def feed(self, *events: PositionEvent | BalanceEvent | Tick) -> list[Alert]:
        out: list[Alert] = []
        for ev in events:
            self.clock.advance(10)
            assert self.book.apply(ev) is None
            trigger = ev if isinstance(ev, Tick) else None
            alerts = self.engine.evaluate(self.book, self.book.drain_dirty(), trigger)
            await self.sink.publish(alerts)  # returns at once, connected or not
            out += alerts
        self.sent += out
        return out


def sink_config(broker: Mosquitto, prefix: str, **over: object) -> MqttConfig:
    base: dict[str, object] = {
        "enabled": True,
        "host": broker.host,
        "port": broker.port,
        "topic_prefix": prefix,
        "client_id": f"monitor-{uuid.uuid4().hex[:8]}",
        "summary_interval_s": 0.1,
        "reconnect_max_s": 0.3,
    }
    base.update(over)
    return MqttConfig(**base)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def observing(broker: Mosquitto) -> AsyncIterator[Observer]:
    """An :class:`Observer` subscribed under a fresh prefix, for the block's duration."""
    obs = Observer(broker, f"t{uuid.uuid4().hex[:8]}")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(obs.run(), name="observer")
        async with asyncio.timeout(10):
            await obs.subscribed.wait()
        try:
            yield obs
        finally:
            task.cancel()


def eth(price: float, ts: int) -> Tick:
    return Tick("ETH-PERP", price, ts)


CONTAGION_BOOK = (
    BalanceEvent("A1", "USDT", 1000.0, 1),
    PositionEvent("A1", "BTC-PERP", 0.1, 20000.0, 2, sub_account="desk-1"),
    PositionEvent("A1", "ETH-PERP", 10.0, 1500.0, 3, sub_account="desk-2"),
    BalanceEvent("A2", "USDT", 550.0, 4),
    PositionEvent("A2", "ETH-PERP", 5.0, 1500.0, 5, sub_account="mm"),
    Tick("BTC-PERP", 21000.0, 6),
    eth(1500.0, 7),
)


def at_event(ts: int) -> Callable[[dict[str, Any]], bool]:
    """A summary that has seen the book up to event time ``ts``."""
    return lambda summary: summary["event_ts"] == ts


def by_account(pairs: list[tuple[str, Alert]], account: str) -> list[tuple[str, str, str, str]]:
    return [(t, a.kind, a.severity, a.state) for t, a in pairs if a.account == account]


async def test_alerts_summary_and_reconnect_after_a_broker_restart(
    small_params: RiskParams, mosquitto: Mosquitto
) -> None:
    async with observing(mosquitto) as observer:
        prefix = observer.prefix
        mon = Monitor(small_params, sink_config(mosquitto, prefix))
        online = f"{prefix}/monitor/online"
        with capture_logs():
            async with asyncio.timeout(45), mon.sink:
                await mon.sink.wait_connected(10)
                await observer.wait_for(lambda _: observer.last(online) is not None, 10)
                assert observer.last(online) == Received(online, b"online", False)

                # A loss in desk-2's ETH position drags A1 (with desk-1's profitable BTC
                # position) to CRITICAL; A2 only holds ETH and reaches WARNING.
                await mon.feed(*CONTAGION_BOOK)
                first = await mon.feed(eth(1460.0, 10), eth(1450.0, 11))
                assert len(first) == 5
                await observer.wait_for(lambda _: len(observer.alerts()) >= 5, 10)
                got = observer.alerts()
                assert [a for _, a in got] == first  # same content, sent order kept
                m, c = f"{prefix}/alerts/margin/A1", f"{prefix}/alerts/contagion/A1"
                assert by_account(got, "A1") == [
                    (m, "margin", "warning", "firing"),
                    (c, "contagion", "warning", "firing"),
                    (m, "margin", "critical", "firing"),
                    (c, "contagion", "critical", "firing"),
                ]
                assert by_account(got, "A2") == [
                    (f"{prefix}/alerts/margin/A2", "margin", "warning", "firing")
                ]
                contagion = got[3][1]
                assert [(x.symbol, x.sub_account) for x in contagion.culprits] == [
                    ("ETH-PERP", "desk-2")
                ]
                assert [(x.symbol, x.sub_account) for x in contagion.victims] == [
                    ("BTC-PERP", "desk-1")
                ]
                assert contagion.victims[0].liquidation_price is not None
                assert contagion.trigger is not None and contagion.trigger.price == 1450.0

                # The retained summary, as a late subscriber sees it.
                summary = await retained(
                    mosquitto, f"{prefix}/summary", lambda s: s["event_ts"] == 11
                )
                assert summary["by_status"] == {
                    "healthy": 0, "warning": 1, "critical": 1, "liquidatable": 0,
                }  # fmt: skip
                assert summary["firing"]["contagion"] == 1

                # The broker goes away mid-stream: the monitor keeps evaluating and queues.
                mosquitto.stop()
                async with asyncio.timeout(10):
                    while mon.sink.connected:  # noqa: ASYNC110 (a test watching a flag)
                        await asyncio.sleep(0.01)
                assert mon.registry.get_sample_value("monitor_mqtt_connected") == 0
                recovery = await mon.feed(eth(1470.0, 20), eth(1520.0, 21))
                assert len(recovery) == 5
                assert mon.sink.queue_depth == 5
                assert mon.registry.get_sample_value("monitor_queue_depth", {"queue": "mqtt"}) == 5

                # Back again: the sink reconnects and delivers what was queued.
                mosquitto.start()
                await mon.sink.wait_connected(10)
                await mon.sink.flush(10)
                await observer.wait_for(lambda _: len(observer.alerts()) >= 10, 15)
                got = observer.alerts()
                assert [a for _, a in got] == first + recovery
                assert by_account(got, "A1")[4:] == [  # all the way down in one tick
                    (m, "margin", "critical", "resolved"),
                    (m, "margin", "warning", "resolved"),
                    (c, "contagion", "critical", "resolved"),
                    (c, "contagion", "warning", "resolved"),
                ]
                assert by_account(got, "A2")[1:] == [
                    (f"{prefix}/alerts/margin/A2", "margin", "warning", "resolved")
                ]
                assert mon.sink.connects == 2 and mon.sink.dropped == 0
                summary = await retained(
                    mosquitto, f"{prefix}/summary", lambda s: s["event_ts"] == 21
                )
                assert summary["by_status"]["healthy"] == 2
            # A clean shutdown says offline itself (the will is only for a crash).
            await observer.wait_for(
                lambda _: observer.last(online) == Received(online, b"offline", False), 10
            )


async def retained(
    broker: Mosquitto, topic: str, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The retained message of ``topic`` as a new subscriber receives it, once it
    satisfies ``ready`` (the summary is refreshed on an interval)."""
    async with asyncio.timeout(10):
        while True:
            async with aiomqtt.Client(broker.host, broker.port) as client:
                await client.subscribe(topic, qos=1)
                async for m in client.messages:
                    assert m.retain
                    assert isinstance(m.payload, bytes)
                    data: dict[str, Any] = orjson.loads(m.payload)
                    if ready(data):
                        return data
                    break
            await asyncio.sleep(0.05)


LAST_WILL_SCRIPT = """
import asyncio, sys
from prometheus_client import CollectorRegistry
from monitor.alerts.config import MqttConfig
from monitor.sinks.mqtt import MqttSink

async def main() -> None:
    cfg = MqttConfig(enabled=True, port=int(sys.argv[1]), topic_prefix=sys.argv[2],
                     client_id=sys.argv[3])
    async with MqttSink(cfg, registry=CollectorRegistry()) as sink:
        await sink.wait_connected(10)
        print("connected", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_the_last_will_says_offline_when_the_monitor_dies(mosquitto: Mosquitto) -> None:
    async with observing(mosquitto) as observer:
        online = f"{observer.prefix}/monitor/online"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LAST_WILL_SCRIPT, str(mosquitto.port), observer.prefix,
            f"monitor-{uuid.uuid4().hex[:8]}",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with asyncio.timeout(30):
                assert proc.stdout is not None
                assert b"connected" in await proc.stdout.readline()
                await observer.wait_for(lambda _: observer.last(online) is not None, 10)
                assert observer.last(online) == Received(online, b"online", False)
                proc.kill()  # no DISCONNECT: the broker publishes the will
                await proc.wait()
                await observer.wait_for(
                    lambda _: observer.last(online) == Received(online, b"offline", False), 10
                )
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        # and it stays retained for whoever looks later
        assert await retained_raw(mosquitto, online) == b"offline"


async def retained_raw(broker: Mosquitto, topic: str) -> bytes:
    async with asyncio.timeout(10), aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic, qos=1)
        async for m in client.messages:
            assert m.retain and isinstance(m.payload, bytes)
            return m.payload
    raise AssertionError("no retained message")


async def test_a_burst_goes_out_in_batches_and_back_to_single_messages_after(
    mosquitto: Mosquitto,
) -> None:
    async with observing(mosquitto) as observer:
        cfg = sink_config(mosquitto, observer.prefix, publish_rate_limit_per_s=500.0,
                          batch_max_alerts=250)  # fmt: skip
        burst = sample_alerts(2000)
        with capture_logs():
            async with asyncio.timeout(45), MqttSink(cfg, registry=CollectorRegistry()) as sink:
                await sink.wait_connected(10)
                await sink.publish(burst)  # far above 500/s
                await sink.flush(20)
                await asyncio.sleep(2.1)  # the burst leaves the rate window
                calm = sample_alerts(2001)[-1:]
                await sink.publish(calm)
                await sink.flush(10)
                await observer.wait_for(lambda _: len(observer.alerts()) >= 2001, 15)
        batches = [m for m in observer.messages if m.topic.endswith("/alerts/batch")]
        assert batches and all(len(batch_from_json_bytes(m.payload)) <= 250 for m in batches)
        assert [a for _, a in observer.alerts()] == burst + calm  # in order, none lost
        assert observer.alerts()[-1][0] == f"{observer.prefix}/alerts/contagion/bench-2000"


async def test_while_disconnected_the_queue_is_bounded_and_overflow_is_counted(
    mosquitto: Mosquitto,
) -> None:
    mosquitto.stop()
    registry = CollectorRegistry()
    cfg = sink_config(mosquitto, "overflow", queue_max=100)
    with capture_logs():
        async with asyncio.timeout(20), MqttSink(cfg, registry=registry) as sink:
            await sink.publish(sample_alerts(150))
            assert sink.queue_depth == 100 and sink.dropped == 50
            assert registry.get_sample_value("monitor_mqtt_dropped_total") == 50
            assert registry.get_sample_value("monitor_queue_depth", {"queue": "mqtt"}) == 100
            assert not sink.connected
