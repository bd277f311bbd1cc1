"""``monitor publish``: recordings into Kafka, at the pace they were recorded.

Accepts plain wire-format JSONL (ticks go to the prices topic keyed by
symbol, positions and balances to account-events keyed by account) and the
output of ``monitor record`` (each message back to its topic, with its key,
value and timestamp; its partition when the topic has it, else by key).
Any compression ``monitor replay`` reads. Several files are merged by event
time. ``--speed 0`` publishes as fast as possible. ``--retime`` re-stamps a
recording to now: every event time (the value's ``ts`` and the Kafka
timestamp) moves by one offset, so the first event is at the start of
publishing and the spacing is kept; a monitor that measures staleness and
latency from event time then sees a live feed. Pacing runs on an injected
:class:`~monitor.clock.Clock`. Messages are written with
``create_batch``/``send_batch``, keyed messages partitioned like the Java
client (murmur2), so one account's events stay in one partition, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import math
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from monitor.clock import Clock, WallClock

NAME = "publish"
HELP = "Publish recordings (wire JSONL or `monitor record` output) into Kafka at pace."

# Waits shorter than this are not worth a flush and a sleep.
MIN_WAIT_MS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument(
        "--speed", type=float, default=1.0,
        help="multiple of recorded time (default 1: real time; 0: as fast as possible)",
    )  # fmt: skip
    parser.add_argument(
        "--retime", action="store_true",
        help="shift every event time by one offset so the first event is now "
        "(spacing kept; paced by --speed)",
    )  # fmt: skip
    parser.add_argument("--bootstrap", help="host:port[,host:port] (default: from the config)")
    parser.add_argument("--config", metavar="FILE", default=os.environ.get("MONITOR_CONFIG"))
    parser.add_argument("--topic-prices", help="topic of ticks (default: from the config)")
    parser.add_argument("--topic-events", help="topic of positions/balances (default: config)")


@dataclass(slots=True)
class Out:
    time_ms: int
    topic: str
    key: bytes | None
    value: bytes | None
    timestamp: int | None
    partition: int | None  # recorded partition, used when the topic has it


def run(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.errors import ConfigError, InputError

    if not args.speed >= 0 or math.isinf(args.speed):
        raise ConfigError("--speed must be a finite number >= 0")
    for f in args.files:  # before connecting to anything
        if not os.path.isfile(f):
            raise InputError(f"{f}: no such file")
    config = load_config(args.config)
    kafka = config.kafka
    if args.bootstrap:
        kafka = replace(kafka, bootstrap_servers=args.bootstrap)
    bad: list[str] = []
    n = asyncio.run(
        publish_files(
            kafka,
            args.files,
            prices=args.topic_prices or config.topics.prices,
            events=args.topic_events or config.topics.account_events,
            speed=args.speed,
            retime=args.retime,
            clock=WallClock(),
            bad=bad,
        )
    )
    for line in bad[:20]:
        sys.stderr.write(f"monitor publish: skipped {line}\n")
    sys.stderr.write(f"monitor publish: {n} messages published, {len(bad)} lines skipped\n")
    return 1 if bad else 0


async def publish_files(
    kafka: Any,
    files: Sequence[str],
    *,
    prices: str,
    events: str,
    speed: float,
    retime: bool,
    clock: Clock,
    bad: list[str],
) -> int:
    """Publish ``files`` merged by event time; lines that cannot be routed go to
    ``bad``. Returns the number of messages published."""
    streams = [messages(f, prices, events, bad) for f in files]
    merged = heapq.merge(*streams, key=lambda m: m.time_ms)
    return await _publish(kafka, merged, speed, clock, retime)


def messages(path: str, prices: str, events: str, bad: list[str]) -> Iterator[Out]:
    """The messages of one file, in file order, with the event time each is paced by."""
    import msgspec

    from monitor.sources.files import read_lines
    from monitor.sources.kafka import RecordedMessage

    class Route(msgspec.Struct):
        ts: int = -1
        type: str | None = None
        symbol: str | None = None
        account: str | None = None
        topic: str | None = None

    route = msgspec.json.Decoder(Route)
    rec = msgspec.json.Decoder(RecordedMessage)
    last = 0
    for n, raw in read_lines(path):
        if not raw.strip():
            continue
        try:
            r = route.decode(raw)
        except msgspec.DecodeError as exc:
            bad.append(f"{path}:{n}: not a JSON object: {exc}")
            continue
        if r.topic is not None:
            try:
                m = rec.decode(raw)
            except msgspec.DecodeError as exc:
                bad.append(f"{path}:{n}: bad recorded message: {exc}")
                continue
            last = max(last, m.timestamp)
            yield Out(last, m.topic, m.key_bytes(), m.value_bytes(), m.timestamp, m.partition)
            continue
        kind = r.type or ("tick" if r.symbol is not None and r.account is None else None)
        if kind == "tick" and r.symbol:
            topic, key = prices, r.symbol.encode()
        elif kind in ("position", "balance") and r.account:
            topic, key = events, r.account.encode()
        else:
            bad.append(f"{path}:{n}: neither a tick nor a position/balance with an account")
            continue
        ts = r.ts if r.ts >= 0 else last
        last = max(last, ts)
        yield Out(last, topic, key, bytes(raw), ts if r.ts >= 0 else None, None)


def retimed(stream: Iterable[Out], start_ms: int) -> Iterator[Out]:
    """Every event time shifted by one offset so that the first is ``start_ms``:
    the pacing time, the Kafka timestamp and the ``ts`` of a JSON object value."""
    offset: int | None = None
    for m in stream:
        if offset is None:
            offset = start_ms - m.time_ms
        yield Out(
            m.time_ms + offset,
            m.topic,
            m.key,
            None if m.value is None else shift_ts(m.value, offset),
            None if m.timestamp is None else m.timestamp + offset,
            m.partition,
        )


def shift_ts(value: bytes, offset: int) -> bytes:
    """``value`` with the integer ``ts`` of its JSON object moved by ``offset``;
    any other value (not JSON, not an object, no integer ``ts``) unchanged."""
    import msgspec

    try:
        obj = msgspec.json.decode(value)
    except msgspec.DecodeError:
        return value
    if not isinstance(obj, dict):
        return value
    ts = obj.get("ts")
    if not isinstance(ts, int) or isinstance(ts, bool):
        return value
    obj["ts"] = ts + offset
    return msgspec.json.encode(obj)


async def paced(
    stream: Iterable[Out],
    speed: float,
    clock: Clock,
    before_wait: Callable[[], Awaitable[None]],
    start_ms: int | None = None,
) -> AsyncIterator[Out]:
    """``stream`` released on ``clock``: the message with event time ``t`` is due
    at ``start_ms + (t - t0) / speed`` (``t0``: the first event time). Before each
    wait ``before_wait`` runs (to send what is batched). ``speed`` 0: no waiting."""
    start = clock.now_ms() if start_ms is None else start_ms
    t0: int | None = None
    for m in stream:
        if speed > 0:
            if t0 is None:
                t0 = m.time_ms
            due = start + math.ceil((m.time_ms - t0) / speed)
            if due - clock.now_ms() >= MIN_WAIT_MS:
                await before_wait()
                await clock.sleep_until(due)
        yield m


async def _publish(
    kafka: Any, stream: Iterator[Out], speed: float, clock: Clock, retime: bool
) -> int:
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

    from monitor.sources.kafka import client_options

    producer = AIOKafkaProducer(**client_options(kafka), acks="all", linger_ms=5)
    await producer.start()
    partitioner = DefaultPartitioner()
    parts: dict[str, list[int]] = {}
    by_key: dict[tuple[str, bytes], int] = {}
    batches: dict[tuple[str, int], Any] = {}
    futures: list[Any] = []
    sent = 0
    rr = 0

    async def flush_batches() -> None:
        for (topic, p), b in batches.items():
            b.close()
            futures.append(await producer.send_batch(b, topic, partition=p))
        batches.clear()

    try:
        # One start time for the re-stamping and the pacing: at speed 1 a message
        # goes out at its new event time.
        start = clock.now_ms()
        source: Iterable[Out] = retimed(stream, start) if retime else stream
        async for m in paced(source, speed, clock, flush_batches, start):
            ps = parts.get(m.topic)
            if ps is None:
                ps = parts[m.topic] = sorted(await producer.partitions_for(m.topic))
            if m.partition is not None and m.partition in ps:
                p = m.partition
            elif m.key is not None:
                k = (m.topic, m.key)
                p = by_key.get(k, -1)
                if p < 0:
                    p = by_key[k] = partitioner(m.key, ps, ps)
            else:
                p = ps[rr % len(ps)]
                rr += 1
            b = batches.get((m.topic, p))
            if b is None:
                b = batches[(m.topic, p)] = producer.create_batch()
            if b.append(key=m.key, value=m.value, timestamp=m.timestamp) is None:
                b.close()
                futures.append(await producer.send_batch(b, m.topic, partition=p))
                b = batches[(m.topic, p)] = producer.create_batch()
                b.append(key=m.key, value=m.value, timestamp=m.timestamp)
            sent += 1
            if len(futures) > 1000:
                await asyncio.gather(*futures)
                futures.clear()
        await flush_batches()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent
