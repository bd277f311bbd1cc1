"""The MQTT sink against a real Mosquitto: a contagion scenario driven through
the book and the alert engine, the retained summary, the last will, and a
broker restart in the middle of the stream."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
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
from monitor.sinks.base import SinkError
from monitor.sinks.mqtt import MqttSink, tls_context
from tests.support.mosquitto import Certs, Mosquitto, mosquitto, mqtt_certs

__all__ = ["mosquitto", "mqtt_certs"]  # the fixtures, imported so pytest finds them

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int = field(default=0, compare=False)


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
                    # QoS 2: a message arrives at the QoS it was published with
                    await client.subscribe(f"{self.prefix}/#", qos=2)
                    self.subscribed.set()
                    async for m in client.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else b""
                        self.messages.append(Received(m.topic.value, payload, m.retain, m.qos))
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
                sent = [m for m in observer.messages if "/alerts/" in m.topic]
                assert sent and all(m.qos == 1 and not m.retain for m in sent)
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
from monitor.sinks.base import SinkError
from monitor.sinks.mqtt import MqttSink, tls_context

async def main() -> None:
    cfg = MqttConfig(enabled=True, port=int(sys.argv[1]), topic_prefix=sys.argv[2],
                     client_id=sys.argv[3])
    instance = sys.argv[4] if len(sys.argv) > 4 else ""
    async with MqttSink(cfg, registry=CollectorRegistry(), instance=instance) as sink:
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


async def test_a_broker_stopped_with_publishes_in_flight_loses_none_of_them(
    mosquitto: Mosquitto,
) -> None:
    n = 6000
    async with observing(mosquitto) as observer:
        # one message per alert, so the stop lands in the middle of the stream
        cfg = sink_config(mosquitto, observer.prefix, publish_rate_limit_per_s=1e9)
        sent = sample_alerts(n)
        with capture_logs():
            async with asyncio.timeout(50), MqttSink(cfg, registry=CollectorRegistry()) as sink:
                await sink.wait_connected(10)
                await sink.publish(sent)
                async with asyncio.timeout(20):
                    while sink.delivered < 1000:  # noqa: ASYNC110 (a test watching a flag)
                        await asyncio.sleep(0.005)
                mosquitto.stop()
                at_stop = sink.delivered
                assert at_stop < n and sink.queue_depth > 0  # publishes were on the wire
                mosquitto.start()
                await sink.wait_connected(10)
                await sink.flush(30)
                assert sink.connects == 2 and sink.dropped == 0
                # (duplicates are counted too: parse only once that many arrived)
                await observer.wait_for(
                    lambda _: count_alerts(observer) >= n and len(observer.alerts()) >= n, 30
                )
    assert [a for _, a in observer.alerts()] == sent  # all, once each, in order


async def test_instances_sharing_a_prefix_have_their_own_summary_and_online_flag(
    mosquitto: Mosquitto,
) -> None:
    async with observing(mosquitto) as observer:
        prefix = observer.prefix
        cfg = sink_config(mosquitto, prefix)
        a = MqttSink(cfg, registry=CollectorRegistry(), instance="monitor-0",
                     summary=lambda: {"accounts": 1})  # fmt: skip
        assert (a.summary_topic, a.online_topic) == (
            f"{prefix}/summary/monitor-0", f"{prefix}/monitor/monitor-0/online",
        )  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LAST_WILL_SCRIPT, str(mosquitto.port), prefix,
            f"monitor-{uuid.uuid4().hex[:8]}", "monitor-1",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            with capture_logs():
                async with asyncio.timeout(30), a:
                    await a.wait_connected(10)
                    assert proc.stdout is not None
                    assert b"connected" in await proc.stdout.readline()
                    on0, on1 = a.online_topic, f"{prefix}/monitor/monitor-1/online"
                    await observer.wait_for(
                        lambda _: observer.last(on0) is not None and observer.last(on1) is not None,
                        10,
                    )
                    proc.kill()  # the second instance dies: only its flag turns offline
                    await proc.wait()
                    await observer.wait_for(
                        lambda _: observer.last(on1) == Received(on1, b"offline", False), 10
                    )
                    assert observer.last(on0) == Received(on0, b"online", False)
                    summary = await retained(mosquitto, a.summary_topic, lambda s: True)
                    assert summary["accounts"] == 1
                    assert observer.last(f"{prefix}/summary") is None  # not the shared topic
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_tls_with_a_client_certificate(tmp_path: Path, mqtt_certs: Certs) -> None:
    broker = Mosquitto(tmp_path / "tls", tls=mqtt_certs)
    broker.start()
    try:
        base = sink_config(broker, "tls", tls=True, tls_ca_file=str(mqtt_certs.ca))
        good = dataclasses.replace(
            base, tls_cert_file=str(mqtt_certs.client_cert),
            tls_key_file=str(mqtt_certs.client_key),
        )  # fmt: skip
        with capture_logs():
            async with asyncio.timeout(20), MqttSink(good, registry=CollectorRegistry()) as sink:
                await sink.wait_connected(10)
                await sink.publish(sample_alerts(3))
                await sink.flush(10)
                assert sink.delivered == 3
            # without a client certificate the broker refuses; the sink keeps trying
            async with asyncio.timeout(20), MqttSink(base, registry=CollectorRegistry()) as sink:
                with pytest.raises(TimeoutError):
                    await sink.wait_connected(1.5)
                assert not sink.connected
    finally:
        broker.stop()


def test_a_client_certificate_that_cannot_be_loaded_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "nope.pem"
    bad.write_text("not a certificate")
    cfg = MqttConfig(tls=True, tls_cert_file=str(bad))
    with pytest.raises(SinkError, match=r"mqtt\.tls_cert_file"):
        tls_context(cfg)


async def test_an_unexpected_connection_error_is_logged_and_retried_not_raised(
    mosquitto: Mosquitto,
) -> None:
    async with observing(mosquitto) as observer:
        cfg = sink_config(mosquitto, observer.prefix)
        sink = MqttSink(cfg, registry=CollectorRegistry())
        real = sink._make_client
        calls = 0

        def flaky() -> aiomqtt.Client:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("not a broker error")
            return real()

        sink._make_client = flaky  # type: ignore[method-assign]
        with capture_logs() as logs:
            async with asyncio.timeout(20), sink:
                await sink.publish(sample_alerts(2))
                await sink.wait_connected(10)  # this task was not cancelled
                await sink.flush(10)
        assert sink.errors == 1 and sink.delivered == 2
        assert any(e["event"] == "mqtt connection failed" for e in logs)


async def test_the_default_queue_delivers_a_100k_account_crash_in_batches_without_drops(
    mosquitto: Mosquitto,
) -> None:
    n = 200_000  # margin and contagion alerts of 100,000 accounts in one tick
    async with observing(mosquitto) as observer:
        cfg = sink_config(mosquitto, observer.prefix)
        assert (cfg.queue_max, cfg.queue_max_mb) == (MqttConfig().queue_max, 256.0)
        crash = sample_alerts(n)
        with capture_logs():
            async with asyncio.timeout(50), MqttSink(cfg, registry=CollectorRegistry()) as sink:
                await sink.wait_connected(10)
                await sink.publish(crash)
                assert sink.queue_bytes <= cfg.queue_max_mb * 1024 * 1024
                await sink.flush(40)
                assert sink.dropped == 0 and sink.delivered == n
                await observer.wait_for(lambda _: count_alerts(observer) >= n, 30)
    batches = [m for m in observer.messages if m.topic.endswith("/alerts/batch")]
    assert sum(len(batch_from_json_bytes(m.payload)) for m in batches) >= n - 2 * 2000
    assert len({a.id for _, a in observer.alerts()}) == n


def count_alerts(observer: Observer) -> int:
    n = 0
    for m in observer.messages:
        if m.topic.endswith("/alerts/batch"):
            n += m.payload.count(b'"id":')
        elif "/alerts/" in m.topic:
            n += 1
    return n


async def test_the_queue_is_bounded_by_memory_too() -> None:
    registry = CollectorRegistry()
    cfg = MqttConfig(enabled=True, port=1, topic_prefix="mem", queue_max_mb=0.01,
                     reconnect_max_s=0.2)  # fmt: skip
    with capture_logs():
        async with asyncio.timeout(20), MqttSink(cfg, registry=registry) as sink:
            await sink.publish(sample_alerts(150))  # about 700 bytes each, no broker
            assert sink.queue_bytes <= 0.01 * 1024 * 1024
            assert 0 < sink.queue_depth < 20 and sink.dropped == 150 - sink.queue_depth
            assert registry.get_sample_value("monitor_mqtt_dropped_total") == sink.dropped
