"""``monitor publish``: recordings into Kafka, at the pace they were recorded.

Accepts plain wire-format JSONL (ticks go to the prices topic keyed by
symbol, positions and balances to account-events keyed by account) and the
output of ``monitor record`` (each message back to its topic, with its key,
value and timestamp; its partition when the topic has it, else by key).
Any compression ``monitor replay`` reads. Several files are merged by time.
``--speed 0`` publishes as fast as possible. Messages are written with
``create_batch``/``send_batch``, keyed messages partitioned like the Java
client (murmur2), so one account's events stay in one partition, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

NAME = "publish"
HELP = "Publish recordings (wire JSONL or `monitor record` output) into Kafka at pace."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument(
        "--speed", type=float, default=1.0,
        help="multiple of recorded time (default 1: real time; 0: as fast as possible)",
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
    from dataclasses import replace

    from monitor.config import load_config
    from monitor.errors import ConfigError

    if args.speed < 0:
        raise ConfigError("--speed must be >= 0")
    config = load_config(args.config)
    kafka = config.kafka
    if args.bootstrap:
        kafka = replace(kafka, bootstrap_servers=args.bootstrap)
    prices = args.topic_prices or config.topics.prices
    events = args.topic_events or config.topics.account_events
    bad: list[str] = []
    streams = [_messages(f, prices, events, bad) for f in args.files]
    merged = heapq.merge(*streams, key=lambda m: m.time_ms)
    n = asyncio.run(_publish(kafka, merged, args.speed))
    for line in bad[:20]:
        sys.stderr.write(f"monitor publish: skipped {line}\n")
    sys.stderr.write(f"monitor publish: {n} messages published, {len(bad)} lines skipped\n")
    return 1 if bad else 0


def _messages(path: str, prices: str, events: str, bad: list[str]) -> Iterator[Out]:
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


async def _publish(kafka: Any, messages: Iterator[Out], speed: float) -> int:
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
        t0: int | None = None
        w0 = time.monotonic()
        for m in messages:
            if speed > 0:
                if t0 is None:
                    t0 = m.time_ms
                due = w0 + (m.time_ms - t0) / 1000.0 / speed
                delay = due - time.monotonic()
                if delay > 0.002:
                    await flush_batches()
                    await asyncio.sleep(delay)
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
