"""``monitor bench --alert-latency``: tick-to-alert through Kafka -> monitor -> MQTT.

One run: Tansu (unless ``--bootstrap``) and a local Mosquitto; the real daemon
(:class:`~monitor.bench.probe.ProbedDaemon`, shipped defaults, ``[mqtt]``
enabled, ``[alerts] min_interval_s = 0``) rebuilds a book of 100,000 accounts
(:func:`~monitor.bench.load.band_load`: a band of 1,000 highly leveraged
BTC-PERP accounts around the thresholds, half long, half short; the rest
healthy). Then another process produces a steady 20,000 msgs/s (90% ticks
stamped with the wall time at produce, 10% balance updates of healthy
accounts) while BTC-PERP follows a sine wave (0.1%, 10 s period): every swing
moves band accounts across WARNING / CRITICAL / LIQUIDATABLE, up and down, so
alerts flow the whole time.

A subscriber in a third process (aiomqtt, QoS 1, ``<prefix>/alerts/#``, so
both single alerts and burst batches) stamps each alert on arrival; its
latency is arrival minus the event time of the tick that caused it:
``trigger.ts`` when the alert names its trigger, else the alert's ``ts``
(the newest event time of the batch evaluated, never older than the tick that
moved the account: then the figure is at most one batch interval low).

Flood control is off (``min_interval_s = 0``) because it delays repeated
firings on purpose, by up to a minute: the figure is the pipeline's latency.
Only alerts caused by ticks of the steady stream count (those of going live,
caused by the rebuilt history, do not).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from monitor.bench.broker import (
    BenchTopics,
    Mosquitto,
    create_topics,
    delete_topics,
    kafka_broker,
)
from monitor.bench.kafka import produced_ticks, run_async
from monitor.bench.load import SYMBOLS, SteadyPlan, band_load, produce
from monitor.bench.probe import (
    BenchError,
    Probe,
    ProbedDaemon,
    counts_of,
    daemon_config,
    run_steady,
    wait_until,
    with_daemon,
)
from monitor.bench.report import Row
from monitor.bench.stats import Latency, rate, tick_latencies

PARTITIONS = 4
BAND = 1_000
STEADY_RATE = 20_000
STEADY_SECONDS = 20.0
WAVE_AMPLITUDE = 0.001
WAVE_PERIOD_S = 10.0
P99_TARGET_MS = 100.0


# ---------------------------------------------------------------- subscriber


def cause_ts(alert: Mapping[str, Any]) -> int | None:
    """Event time of what caused an alert: its trigger's ``ts``, else its ``ts``."""
    trig = alert.get("trigger")
    if isinstance(trig, Mapping) and isinstance(trig.get("ts"), int):
        return int(trig["ts"])
    ts = alert.get("ts")
    return int(ts) if isinstance(ts, int) else None


async def subscribe(host: str, port: int, prefix: str) -> dict[str, Any]:
    """Collect (arrival ms, cause ms) of every alert until SIGTERM; prints
    ``subscribed`` once the subscription is acknowledged."""
    import aiomqtt

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    arrival: list[float] = []
    cause: list[int] = []
    kinds: dict[str, int] = {}
    batches = 0

    def take(alert: Mapping[str, Any], at: float) -> None:
        c = cause_ts(alert)
        if c is None:
            return
        arrival.append(at)
        cause.append(c)
        key = f"{alert.get('kind')}/{alert.get('state')}"
        kinds[key] = kinds.get(key, 0) + 1

    async with aiomqtt.Client(host, port, identifier=f"bench-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(f"{prefix}/alerts/#", qos=1)
        sys.stdout.write("subscribed\n")
        sys.stdout.flush()

        async def receive() -> None:
            nonlocal batches
            async for msg in client.messages:
                at = time.time_ns() / 1e6
                payload = msg.payload
                if not isinstance(payload, bytes | bytearray):
                    continue
                body = json.loads(payload)
                if isinstance(body, list):
                    batches += 1
                    for a in body:
                        take(a, at)
                elif isinstance(body, dict):
                    take(body, at)

        async with asyncio.TaskGroup() as tg:
            rx = tg.create_task(receive(), name="bench-subscriber")
            await stop.wait()
            rx.cancel()
    return {"arrival_ms": arrival, "cause_ms": cause, "kinds": kinds, "batches": batches}


class Subscriber:
    """The subscriber process: started, then told to stop (SIGTERM to its pid)."""

    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.args = [sys.executable, "-m", "monitor.bench.alert_latency", host, str(port), prefix]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout_s: float = 20.0) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                line = await self.proc.stdout.readline()
        except TimeoutError:
            line = b""
        if line.strip() != b"subscribed":
            await self.kill()
            raise BenchError("the MQTT subscriber did not subscribe")

    async def stop(self) -> dict[str, Any]:
        proc = self.proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            tail = " | ".join(err.decode(errors="replace").strip().splitlines()[-3:])
            raise BenchError(f"the MQTT subscriber failed ({proc.returncode}): {tail}")
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return result

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


# ---------------------------------------------------------------- the bench


def alert_latencies(sub: Mapping[str, Any], since_ms: float) -> tuple[Any, int]:
    """Latencies (ms) of the alerts caused at or after ``since_ms``; and how many
    alerts were caused before (going live on the rebuilt history)."""
    arrival = np.asarray(sub["arrival_ms"], dtype=np.float64)
    cause = np.asarray(sub["cause_ms"], dtype=np.float64)
    keep = cause >= since_ms
    return arrival[keep] - cause[keep], int((~keep).sum())


async def _measure(
    d: ProbedDaemon,
    task: asyncio.Task[Any],
    mqtt: Mosquitto,
    prefix: str,
    bootstrap: str,
    topics: BenchTopics,
    start: dict[TopicPartition, int],
    accounts: int,
    band: int,
    steady_rate: float,
    steady_s: float,
) -> dict[str, Any]:
    await wait_until(d.ready.is_set, 300, "rebuilding the book", task)
    sink = next(s for s in d.engine.sinks if type(s).__name__ == "MqttSink")
    sub = Subscriber(mqtt.host, mqtt.port, prefix)
    await sub.start()
    try:
        book = d.engine.book
        marks = {s: float(book.sym_price[book.params.symbol_id[s]]) for s in SYMBOLS}
        plan = SteadyPlan(
            bootstrap,
            topics.prices,
            topics.account_events,
            PARTITIONS,
            PARTITIONS,
            steady_rate,
            steady_s,
            marks,
            accounts_lo=band,
            accounts_hi=accounts,
            wave_symbol="BTC-PERP",
            wave_amplitude=WAVE_AMPLITUDE,
            wave_period_s=WAVE_PERIOD_S,
        )
        delivered0 = int(getattr(sink, "delivered", 0))
        d.probe.record_evaluations()
        since_ms = time.time_ns() / 1e6
        sent = await run_steady(plan)
        end = {**start}
        for topic in (topics.prices, topics.account_events):
            for p, n in counts_of(sent, topic).items():
                tp = TopicPartition(topic, p)
                end[tp] = start.get(tp, 0) + n
        d.arm(end)
        await wait_until(lambda: d.probe.done_at is not None, 60, "applying the stream", task)
        evaluations = d.probe.evaluations()
        await sink.flush(60.0)  # every alert acknowledged by the broker
        await asyncio.sleep(0.5)  # and forwarded to the subscriber
        got = await sub.stop()
    finally:
        await sub.kill()
    lat, before = alert_latencies(got, since_ms)
    ranges = {tp: (start.get(tp, 0), e) for tp, e in end.items() if tp.topic == topics.prices}
    tick_lat, missing = tick_latencies(await produced_ticks(bootstrap, ranges), evaluations)
    return {
        "steady": sent,
        "steady_rate_target": steady_rate,
        "alerts": int(lat.size),
        "alerts_per_s": rate(int(lat.size), float(sent["seconds"])),
        "alerts_before_stream": before,
        "alerts_by_kind": got["kinds"],
        "batch_messages": got["batches"],
        "sink_delivered": int(getattr(sink, "delivered", 0)) - delivered0,
        "sink_dropped": int(getattr(sink, "dropped", 0)),
        "latency": Latency.of(lat),
        "tick_latency": Latency.of(tick_lat),
        "ticks_unevaluated": missing,
        "book_accounts": d.engine.book.n_accounts,
    }


async def bench_alert_latency_async(
    bootstrap: str | None,
    accounts: int,
    *,
    band: int = BAND,
    steady_rate: float = STEADY_RATE,
    steady_s: float = STEADY_SECONDS,
) -> dict[str, Any]:
    band = min(band, accounts)
    mqtt = Mosquitto()
    mqtt.start()
    try:
        with kafka_broker(bootstrap) as bs:
            topics = BenchTopics.fresh("bench-alerts")
            await create_topics(bs, {t: PARTITIONS for t in topics.all()})
            try:
                load = band_load(accounts, band)
                start: dict[TopicPartition, int] = {}
                for topic, msgs in (
                    (topics.prices, load.prices),
                    (topics.account_events, load.events),
                ):
                    counts, _ = await produce(bs, topic, msgs, PARTITIONS)
                    start.update({TopicPartition(topic, p): n for p, n in counts.items()})
                prefix = f"bench-{uuid.uuid4().hex[:8]}"
                with tempfile.TemporaryDirectory(prefix="bench-alerts-state-") as state:
                    cfg = daemon_config(
                        bs,
                        topics,
                        state,
                        alerts={"min_interval_s": 0.0},
                        mqtt={
                            "enabled": True,
                            "host": mqtt.host,
                            "port": mqtt.port,
                            "topic_prefix": prefix,
                            "client_id": prefix,
                        },
                    )
                    d = ProbedDaemon(
                        cfg,
                        Probe(topics.prices),
                        registry=CollectorRegistry(),
                        install_signal_handlers=False,
                    )
                    out = await with_daemon(
                        d,
                        lambda task: _measure(
                            d,
                            task,
                            mqtt,
                            prefix,
                            bs,
                            topics,
                            start,
                            accounts,
                            band,
                            steady_rate,
                            steady_s,
                        ),
                    )
                out["band"] = band
                out["load_messages"] = len(load)
                return out
            finally:
                if bootstrap:
                    await delete_topics(bs, topics.all())
    finally:
        mqtt.stop()


def bench_alert_latency(bootstrap: str | None, accounts: int) -> dict[str, Any]:
    return dict(run_async(bench_alert_latency_async(bootstrap, accounts)))


def rows(r: Mapping[str, Any]) -> list[Row]:
    lat: Latency = r["latency"]
    tick: Latency = r["tick_latency"]
    steady = r["steady"]
    return [
        Row(
            f"alert book: accounts ({r['band']:,} near the thresholds)",
            float(r["book_accounts"]),
            "",
        ),
        Row(
            "steady stream: achieved rate",
            float(steady["rate"]),
            "msgs/s",
            f"{r['steady_rate_target']:,.0f}",
            steady["rate"] >= 0.97 * r["steady_rate_target"],
        ),
        Row("  seconds", float(steady["seconds"]), "s"),
        Row("alerts received over MQTT (caused by the stream)", float(r["alerts"]), "alerts"),
        Row("  alerts per second", float(r["alerts_per_s"]), "alerts/s"),
        Row("  acknowledged to the MQTT sink by the broker", float(r["sink_delivered"]), "alerts"),
        Row(
            "  dropped by the MQTT sink",
            float(r["sink_dropped"]),
            "alerts",
            "0",
            r["sink_dropped"] == 0,
        ),
        *(
            Row(f"  {kind.replace('/', ' ')}", float(n), "alerts")
            for kind, n in sorted(r["alerts_by_kind"].items())
        ),
        Row("  batch messages (burst mode of the MQTT sink)", float(r["batch_messages"]), "msgs"),
        Row("tick-to-alert p50 (produce -> MQTT subscriber)", lat.p50, "ms"),
        Row(
            "tick-to-alert p99",
            lat.p99,
            "ms",
            f"<= {P99_TARGET_MS:.0f} ms",
            lat.p99 <= P99_TARGET_MS,
        ),
        Row("tick-to-alert max", lat.max, "ms"),
        Row("  same run: tick-to-evaluation p99 (every tick)", tick.p99, "ms"),
    ]


def main(argv: Sequence[str]) -> int:
    """The subscriber process: ``python -m monitor.bench.alert_latency HOST PORT PREFIX``."""
    host, port, prefix = argv
    out = run_async(subscribe(host, int(port), prefix))
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
