"""Alerts to an MQTT broker (aiomqtt), never blocking the evaluation.

Topics (``<prefix>`` = ``topic_prefix``):

- ``<prefix>/alerts/<kind>/<account>``: one alert per message, QoS 1, not
  retained. ``/``, ``+``, ``#`` and ``%`` in an account id are percent-encoded
  so an id is always one topic level.
- ``<prefix>/alerts/batch``: during a burst, JSON arrays of up to
  ``batch_max_alerts`` alerts (QoS 1). Subscribe to ``<prefix>/alerts/#`` to
  get both forms.
- ``<prefix>/summary``: retained counts by status, refreshed every
  ``summary_interval_s``.
- ``<prefix>/monitor/online``: retained ``online`` on connect; ``offline`` as
  the last will and on a clean shutdown.

Several instances sharing one prefix (scale-out) each pass their ``instance``
name: the summary goes to ``<prefix>/summary/<instance>`` and the online flag
to ``<prefix>/monitor/<instance>/online`` (the alert topics are shared; an
account belongs to one instance).

``publish`` appends the encoded alerts to a bounded queue and returns. One
task drains the queue while connected: alert by alert (up to 100
unacknowledged publishes) while the arrival rate stays under
``publish_rate_limit_per_s``, in batches above it or when a backlog builds up
(after a reconnect), and back when the burst is over. An alert leaves the
queue only once the broker has acknowledged it, so what was queued while
disconnected is delivered after the reconnect (at least once: a message cut
off by a disconnect is sent again).

The queue is bounded by count (``queue_max``) and by memory (``queue_max_mb``:
the encoded alerts plus :data:`ENTRY_OVERHEAD` bytes each, in flight
included); past either the oldest alerts are dropped and counted
(``monitor_mqtt_dropped_total``); the durable sinks still carry them. The
defaults hold a 100,000-account crash (~200,000 alerts, ~140 MiB).

The connection runs in a task group of the sink's own: any error in it (not
only a broker disconnect) is logged and followed by a reconnect, never
propagated into the task that started the sink. Reconnects use capped,
jittered exponential backoff (``uniform(0, 1.5 ** min(10, attempt))``, at most
``reconnect_max_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import ssl
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiomqtt
import orjson
import structlog

from monitor.alerts.config import MqttConfig
from monitor.alerts.metrics import MqttMetrics
from monitor.alerts.model import Alert, payloads, wire_account
from monitor.clock import Clock
from monitor.sinks.base import DeliveryTimeoutError, SinkError

log = structlog.get_logger("monitor.sinks.mqtt")

# Publishes in flight at once in per-alert mode: enough to hide the round trip
# to the broker, few enough that a reconnect re-sends little.
INFLIGHT = 100
# Memory of one queued alert besides its JSON: the entry tuple and the bytes
# object's header (measured: 64 + 33).
ENTRY_OVERHEAD = 100

Entry = tuple[bytes, str, str]  # (wire JSON, kind, account)

_ESCAPES = str.maketrans({"%": "%25", "/": "%2F", "+": "%2B", "#": "%23", "\x00": "%00"})


def topic_segment(value: str) -> str:
    """An account id as exactly one topic level."""
    return value.translate(_ESCAPES)


def backoff_s(attempt: int, cap_s: float, rng: random.Random) -> float:
    """Delay before reconnect attempt ``attempt`` (1, 2, ...)."""
    return min(cap_s, rng.uniform(0.0, 1.5 ** min(10, attempt)))


class BurstDetector:
    """Chooses per-alert or batch publishing from the arrival rate and the backlog.

    Enters batch mode when alerts arrive faster than the limit over the last
    second, or when more than a second's worth (at the limit) is waiting;
    leaves it when both have fallen below half of that, so it does not flap
    at the boundary."""

    def __init__(self, limit_per_s: float) -> None:
        self.limit = limit_per_s
        self.batch = False
        self._t0 = 0.0
        self._cur = 0
        self._prev = 0

    def _roll(self, now: float) -> None:
        elapsed = now - self._t0
        if elapsed >= 1.0:
            self._prev = self._cur if elapsed < 2.0 else 0
            self._cur = 0
            self._t0 = now if elapsed >= 2.0 else self._t0 + 1.0

    def arrived(self, n: int, now: float) -> None:
        self._roll(now)
        self._cur += n

    def rate(self, now: float) -> float:
        """Arrivals over the last second (sliding estimate)."""
        self._roll(now)
        return self._prev * max(0.0, 1.0 - (now - self._t0)) + self._cur

    def decide(self, now: float, backlog: int) -> bool:
        rate = self.rate(now)
        if not self.batch and (rate > self.limit or backlog > self.limit):
            self.batch = True
            log.info("mqtt batch mode on", rate_per_s=round(rate), backlog=backlog)
        elif self.batch and rate <= self.limit / 2 and backlog <= self.limit / 2:
            self.batch = False
            log.info("mqtt batch mode off", rate_per_s=round(rate), backlog=backlog)
        return self.batch


class MqttSink:
    """The MQTT alert sink (not durable: it may drop under overload, counted)."""

    name = "mqtt"
    durable = False

    def __init__(
        self,
        config: MqttConfig,
        *,
        clock: Clock | None = None,
        registry: Any = None,
        summary: Callable[[], Mapping[str, Any]] | None = None,
        close_timeout_s: float = 3.0,
        rng: random.Random | None = None,
        instance: str = "",
    ) -> None:
        """``summary``: returns the retained summary's content (the daemon passes
        ``lambda: alert_engine.summary(book)``); ``clock`` stamps it
        (``published_at``); ``close_timeout_s`` bounds the whole of ``close()``;
        ``instance``: this instance's name when several share the prefix (its
        summary and online flag get their own topics), "" for one instance."""
        self.config = config
        self.clock = clock
        self.instance = instance
        prefix = config.topic_prefix
        self.batch_topic = f"{prefix}/alerts/batch"
        if instance:
            me = topic_segment(instance)
            self.summary_topic = f"{prefix}/summary/{me}"
            self.online_topic = f"{prefix}/monitor/{me}/online"
        else:
            self.summary_topic = f"{prefix}/summary"
            self.online_topic = f"{prefix}/monitor/online"
        self._alerts_prefix = f"{prefix}/alerts/"
        self.summary = summary
        self._close_timeout_s = close_timeout_s
        self._rng = rng or random.Random()
        self._metrics = MqttMetrics(registry)
        self._queue: deque[Entry] = deque()
        self._inflight: dict[int, list[Entry]] = {}  # message number -> its alerts
        self._n_inflight = 0
        self._bytes = 0  # memory of the queued and in-flight alerts (see ENTRY_OVERHEAD)
        self._max_bytes = int(config.queue_max_mb * 1024 * 1024)
        self._metrics.queue_depth.labels(queue="mqtt").set_function(lambda: self.queue_depth)
        self._burst = BurstDetector(config.publish_rate_limit_per_s)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._tls: ssl.SSLContext | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._conn_task: asyncio.Task[None] | None = None
        self._closing = False
        self.delivered = 0
        self.dropped = 0
        self.connects = 0
        self.errors = 0  # connection failures other than the broker going away

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> MqttSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._stack is not None:
            return
        if self.config.tls:
            self._tls = tls_context(self.config)
        stack = contextlib.AsyncExitStack()
        tg = await stack.enter_async_context(asyncio.TaskGroup())
        self._conn_task = tg.create_task(self._connection_loop(), name="mqtt-connection")
        self._stack = stack

    async def close(self) -> None:
        """Deliver what is queued, say ``offline``, disconnect: all within
        ``close_timeout_s`` (what is still queued then is logged and dropped)."""
        stack = self._stack
        if stack is None:
            return
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._close_timeout_s
        try:
            try:
                await self.flush(0.6 * self._close_timeout_s)
            except DeliveryTimeoutError:
                log.warning("mqtt closing with undelivered alerts", queued=self.queue_depth)
            client = self._client
            if client is not None:
                # A clean disconnect does not fire the last will: say it ourselves.
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    async with asyncio.timeout(max(0.1, deadline - loop.time())):
                        await client.publish(self.online_topic, b"offline", qos=1, retain=True)
        finally:
            if self._conn_task is not None:
                self._conn_task.cancel()
            try:
                async with asyncio.timeout(max(0.5, deadline - loop.time())):
                    await stack.aclose()
            except TimeoutError:
                log.warning("mqtt disconnect did not finish in time")
            finally:
                self._stack = None
                self._conn_task = None
                self._metrics.connected.set(0)

    # ------------------------------------------------------------ the sink API
    async def publish(self, alerts: Sequence[Alert | Any]) -> None:
        """Queue alerts for the broker; returns at once."""
        if not alerts:
            return
        if self._closing:
            raise SinkError("mqtt sink: publish after close")
        entries = [
            (p, a.kind, wire_account(a)) for a, p in zip(alerts, payloads(alerts), strict=True)
        ]
        n = len(entries)
        self._queue.extend(entries)
        self._bytes += sum(len(e[0]) for e in entries) + ENTRY_OVERHEAD * n
        self._make_room()
        self._burst.arrived(n, asyncio.get_running_loop().time())
        self._idle.clear()
        self._wake.set()

    def _make_room(self) -> None:
        """Drop the oldest queued alerts until both bounds hold (what is in flight
        stays: it is on the wire already)."""
        q = self._queue
        cap = self.config.queue_max
        dropped = 0
        while q and (len(q) + self._n_inflight > cap or self._bytes > self._max_bytes):
            payload = q.popleft()[0]
            self._bytes -= len(payload) + ENTRY_OVERHEAD
            dropped += 1
        self._drop(dropped)

    async def flush(self, timeout_s: float) -> None:
        """Wait until every queued alert is acknowledged by the broker."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError as exc:
            raise DeliveryTimeoutError(
                f"mqtt: {self.queue_depth} alerts not acknowledged by "
                f"{self.config.host}:{self.config.port} within {timeout_s} s"
            ) from exc

    @property
    def queue_depth(self) -> int:
        return len(self._queue) + self._n_inflight

    @property
    def queue_bytes(self) -> int:
        """Memory the waiting and in-flight alerts take (the ``queue_max_mb`` bound)."""
        return self._bytes

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            await self._connected.wait()

    def topic_for(self, alert: Alert | Any) -> str:
        return self._topic(alert.kind, wire_account(alert))

    def _topic(self, kind: str, account: str) -> str:
        return f"{self._alerts_prefix}{kind}/{topic_segment(account)}"

    # ------------------------------------------------------------ tasks
    def _make_client(self) -> aiomqtt.Client:
        cfg = self.config
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.password,
            identifier=cfg.client_id,
            will=aiomqtt.Will(self.online_topic, b"offline", qos=1, retain=True),
            tls_context=self._tls,
            max_inflight_messages=INFLIGHT,
            timeout=10.0,
        )
        client.pending_calls_threshold = INFLIGHT + 10
        return client

    async def _connection_loop(self) -> None:
        """Connect, run, reconnect: forever (until cancelled). Nothing but the
        cancellation leaves this loop, so no error of the connection (a broker
        going away, a bad certificate, a bug) reaches the task that started the
        sink: each is logged and followed by a reconnect with backoff."""
        attempt = 0
        cfg = self.config
        while True:
            try:
                async with self._make_client() as client:
                    attempt = 0
                    await client.publish(self.online_topic, b"online", qos=1, retain=True)
                    self._client = client
                    self.connects += 1
                    self._connected.set()
                    self._metrics.connected.set(1)
                    log.info("mqtt connected", host=cfg.host, port=cfg.port)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._watch(client), name="mqtt-watch")
                        tg.create_task(self._publisher(client), name="mqtt-publisher")
                        tg.create_task(self._summary_loop(client), name="mqtt-summary")
            except* aiomqtt.MqttError as group:
                log.warning(
                    "mqtt disconnected", host=cfg.host, port=cfg.port,
                    error=str(group.exceptions[0]), queued=self.queue_depth,
                )  # fmt: skip
            except* Exception as group:
                self.errors += 1
                log.error(
                    "mqtt connection failed", host=cfg.host, port=cfg.port,
                    error=repr(group.exceptions[0]), queued=self.queue_depth,
                )  # fmt: skip
            finally:
                self._client = None
                self._connected.clear()
                self._metrics.connected.set(0)
            attempt += 1
            await asyncio.sleep(backoff_s(attempt, cfg.reconnect_max_s, self._rng))

    async def _watch(self, client: aiomqtt.Client) -> None:
        # Nothing is subscribed: the iterator only ends, with MqttError, on disconnect.
        async for _ in client.messages:
            pass
        raise aiomqtt.MqttError("disconnected")

    async def _publisher(self, client: aiomqtt.Client) -> None:
        """Drain the queue through a sliding window of unacknowledged publishes.

        A window (rather than waiting for a whole group of acknowledgements)
        keeps the client sending, so the TCP acknowledgements of the broker's
        PUBACKs ride on outgoing data: with a broker that leaves Nagle on, a
        stop-and-wait group stalls on delayed ACKs (measured: 5 in flight per
        group, 1,100/s; sliding window of 100, 13,000/s)."""
        q = self._queue
        inflight = self._inflight
        loop = asyncio.get_running_loop()
        window = asyncio.Semaphore(INFLIGHT)
        seq = itertools.count()

        async def send(k: int, topic: str, payload: bytes) -> None:
            try:
                await client.publish(topic, payload, qos=1)
            finally:
                window.release()
            done = inflight.pop(k)
            n = len(done)
            self._n_inflight -= n
            self._bytes -= sum(len(e[0]) for e in done) + ENTRY_OVERHEAD * n
            self.delivered += n
            if not q and not inflight:
                self._idle.set()

        try:
            async with asyncio.TaskGroup() as tg:
                while True:
                    if not q:
                        if not inflight:
                            self._idle.set()
                        self._wake.clear()
                        await self._wake.wait()
                        continue
                    await window.acquire()
                    if not q:
                        window.release()
                        continue
                    if self._burst.decide(loop.time(), len(q)):
                        n = min(self.config.batch_max_alerts, len(q))
                        chunk = [q.popleft() for _ in range(n)]
                        topic = self.batch_topic
                        payload = b"[" + b",".join(e[0] for e in chunk) + b"]"
                    else:
                        chunk = [q.popleft()]
                        payload, kind, account = chunk[0]
                        topic = self._topic(kind, account)
                    k = next(seq)
                    inflight[k] = chunk
                    self._n_inflight += len(chunk)
                    tg.create_task(send(k, topic, payload), name="mqtt-publish")
        except BaseException:
            # Not acknowledged (disconnect or shutdown): back to the head of the
            # queue in their order, to be sent again after the reconnect.
            for k in sorted(inflight, reverse=True):
                q.extendleft(reversed(inflight[k]))
            inflight.clear()
            self._n_inflight = 0
            raise

    async def _summary_loop(self, client: aiomqtt.Client) -> None:
        while True:
            if self.summary is None:
                await asyncio.sleep(self.config.summary_interval_s)
                continue
            try:
                content = dict(self.summary())
                if self.clock is not None:
                    content["published_at"] = self.clock.now_ms()
                payload = orjson.dumps(content)
            except Exception as exc:
                log.error("mqtt summary failed", error=repr(exc))
            else:
                await client.publish(self.summary_topic, payload, qos=1, retain=True)
            await asyncio.sleep(self.config.summary_interval_s)

    def _drop(self, n: int) -> None:
        if n <= 0:
            return
        self.dropped += n
        self._metrics.dropped.inc(n)
        log.warning(
            "mqtt queue full, alerts dropped", dropped=n, queue_max=self.config.queue_max,
            queue_max_mb=self.config.queue_max_mb,
        )  # fmt: skip


def tls_context(config: MqttConfig) -> ssl.SSLContext:
    """The TLS context of ``config``: its CA (else the system's) and, when set,
    the client certificate and key; a file that cannot be loaded is a
    :class:`SinkError` naming the setting."""
    try:
        ctx = ssl.create_default_context(cafile=config.tls_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise SinkError(
            f"mqtt: cannot load the TLS CA file {config.tls_ca_file!r} (mqtt.tls_ca_file): {exc}"
        ) from exc
    if config.tls_cert_file is not None:
        try:
            ctx.load_cert_chain(config.tls_cert_file, config.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise SinkError(
                f"mqtt: cannot load the client certificate {config.tls_cert_file!r} "
                f"(mqtt.tls_cert_file, mqtt.tls_key_file): {exc}"
            ) from exc
    return ctx
