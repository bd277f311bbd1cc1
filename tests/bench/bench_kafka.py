"""Kafka ingestion benchmark (``monitor bench --kafka``), against a broker it starts.

In one run, on the same topics:

1. produce N messages (a balance for each account, positions, and ticks for the
   rest) with ``create_batch``/``send_batch``;
2. *ceiling*: a bare aiokafka consumer reads them back and decodes each with
   the engine's msgspec decoder (no book) -- the most any consumer of these
   topics can do in Python on this machine;
3. *daemon*: the real :class:`~monitor.daemon.Daemon` (same process, uvloop)
   rebuilds its book from the same topics: ingest, decode, conflate, apply,
   evaluate alerts. Its rate counts only the time it is busy on each topic
   (the union of [first fetch, last apply] per topic), so the consumer-group
   join delay of the broker is not charged to it;
4. *latency*: with the daemon caught up, a separate process produces a steady
   20,000 msgs/s (ticks stamped with the wall time at send, some position
   updates) and the daemon's tick-to-evaluation latency (event time to the end
   of the evaluation that applied the tick) is sampled per applied tick.

``bench_kafka(messages, accounts) -> dict`` returns every figure.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PARTITIONS = 4
SYMBOLS = ["BTC-PERP", "ETH-PERP", "SOL-PERP", "DOGE-PERP", "HYPE-PERP"]
MARKS = {"BTC-PERP": 60000.0, "ETH-PERP": 3000.0, "SOL-PERP": 150.0, "DOGE-PERP": 0.15,
         "HYPE-PERP": 30.0}  # fmt: skip
STEADY_RATE = 20_000
STEADY_SECONDS = 6.0


def _partition(key: bytes) -> int:
    # Any stable function keeps one key on one partition (the order that matters).
    return zlib.crc32(key) % PARTITIONS


def make_messages(
    messages: int, accounts: int, seed: int = 1
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """(prices, account events) as (key, value): one balance per account, about two
    positions per account, ticks for the rest (at least 30% of the messages)."""
    rnd = random.Random(seed)
    enc = msgspec.json.encode
    n_events = min(max(accounts, int(messages * 0.3)), messages - messages // 10)
    n_ticks = messages - n_events
    ts = 1_700_000_000_000
    events: list[tuple[bytes, bytes]] = []
    for i in range(min(accounts, n_events)):
        a = f"acct-{i:07d}"
        events.append((a.encode(), enc({"type": "balance", "account": a, "asset": "USDT",
                                        "amount": rnd.uniform(2e4, 2e5), "ts": ts})))  # fmt: skip
    while len(events) < n_events:
        a = f"acct-{rnd.randrange(accounts):07d}"
        s = rnd.choice(SYMBOLS)
        ts += 1
        notional = rnd.uniform(1e3, 1e5)
        events.append((a.encode(), enc({
            "type": "position", "account": a, "symbol": s,
            "qty": rnd.choice((-1, 1)) * notional / MARKS[s],
            "entry_price": MARKS[s] * (1 + rnd.gauss(0, 0.01)), "ts": ts,
        })))  # fmt: skip
    prices: list[tuple[bytes, bytes]] = []
    marks = dict(MARKS)
    for _ in range(n_ticks):
        s = rnd.choice(SYMBOLS)
        marks[s] *= 1 + rnd.gauss(0, 0.0005)
        ts += 1
        prices.append((s.encode(), enc({"symbol": s, "price": marks[s], "ts": ts})))
    return prices, events


async def produce_fast(bootstrap: str, topic: str, msgs: list[tuple[bytes, bytes]]) -> float:
    """Produce with create_batch/send_batch; returns msgs/s."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, max_batch_size=1 << 20,
                                linger_ms=5)  # fmt: skip
    await producer.start()
    t0 = time.perf_counter()
    try:
        by_part: dict[int, list[tuple[bytes, bytes]]] = {}
        for k, v in msgs:
            by_part.setdefault(_partition(k), []).append((k, v))
        futs = []
        for p, part in by_part.items():
            batch = producer.create_batch()
            for k, v in part:
                if batch.append(key=k, value=v, timestamp=None) is None:
                    batch.close()
                    futs.append(await producer.send_batch(batch, topic, partition=p))
                    batch = producer.create_batch()
                    batch.append(key=k, value=v, timestamp=None)
            batch.close()
            futs.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return len(msgs) / (time.perf_counter() - t0)


async def ceiling(bootstrap: str, prices: str, events: str, total: int) -> float:
    """Bare consume-and-decode rate over both topics (msgs/s)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from monitor.events import Decoder
    from monitor.instruments import load_instruments

    dec = Decoder(load_instruments())
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_wait_ms=10)  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in (prices, events) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        n = 0
        t0 = None
        while n < total:
            data = await consumer.getmany(timeout_ms=500, max_records=10_000)
            if t0 is None and data:
                t0 = time.perf_counter()
            for tp, recs in data.items():
                decode = dec.decode_price if tp.topic == prices else dec.decode_event
                for r in recs:
                    decode(r.value)
                n += len(recs)
        assert t0 is not None
        return n / (time.perf_counter() - t0)
    finally:
        await consumer.stop()


class _Samples:
    """Stands in for a histogram: keeps every observation."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, v: float) -> None:
        self.values.append(v)


async def daemon_run(bootstrap: str, topics: Any, state: Path, n_prices: int, n_events: int
                     ) -> dict[str, Any]:  # fmt: skip
    from prometheus_client import CollectorRegistry

    from monitor.config import build_config
    from monitor.daemon import Daemon

    cfg = build_config({
        "kafka": {"bootstrap_servers": bootstrap, "group_id": topics.group},
        "topics": {"prices": topics.prices, "account_events": topics.account_events,
                   "alerts": topics.alerts, "dlq": topics.dlq, "partials": topics.partials},
        "http": {"host": "127.0.0.1", "port": 0},
        "state": {"dir": str(state), "snapshot_interval_s": 30.0},
    }, env={})  # fmt: skip
    d = Daemon(cfg, registry=CollectorRegistry(), install_signal_handlers=False)
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    want = {topics.prices: n_prices, topics.account_events: n_events}
    orig = d._apply_pending
    busy: list[float] = []

    async def timed() -> None:
        t0 = time.perf_counter()
        await orig()
        now = time.perf_counter()
        busy.append(now - t0)
        for topic, n in want.items():
            done = sum(o for tp, o in d.offsets.items() if tp.topic == topic)
            if done and topic not in first:
                first[topic] = now
            if done >= n and topic not in last:
                last[topic] = now

    d._apply_pending = timed  # type: ignore[method-assign]
    task = asyncio.create_task(d.run(), name="bench-daemon")
    t_start = time.perf_counter()
    while len(last) < 2:
        await asyncio.sleep(0.01)
        if task.done():
            raise RuntimeError(f"daemon stopped: {task.result()}")
    # Busy time: union of the per-topic [first apply, last apply] intervals, each
    # extended back by one batch (the fetch before the first apply).
    spans = sorted((first[t] - 0.01, last[t]) for t in want)
    busy_s = 0.0
    cur_s, cur_e = spans[0]
    for s, e in spans[1:]:
        if s > cur_e:
            busy_s += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    busy_s += cur_e - cur_s
    total = n_prices + n_events
    out: dict[str, Any] = {
        "daemon_msgs_per_s": total / busy_s,
        "daemon_busy_s": busy_s,
        "daemon_wall_s": max(last.values()) - t_start,
        "daemon_prices_msgs_per_s": n_prices / (last[topics.prices] - first[topics.prices] + 0.01),
        "daemon_events_msgs_per_s": n_events
        / (last[topics.account_events] - first[topics.account_events] + 0.01),
        "book_accounts": d.engine.book.n_accounts,
        "book_positions": d.engine.book.n_positions,
    }
    await asyncio.wait_for(d.ready.wait(), 60)
    # Latency at a steady rate, from another process.
    samples, ages = _Samples(), _Samples()
    d.metrics.tick_to_evaluation = samples  # type: ignore[assignment]
    d.metrics.tick_age = ages  # type: ignore[assignment]
    book = d.engine.book
    marks = {s: float(book.sym_price[book.params.symbol_id[s]]) for s in SYMBOLS}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "steady", bootstrap, topics.prices, topics.account_events,
        str(STEADY_RATE), str(STEADY_SECONDS), json.dumps(marks),
    )  # fmt: skip
    busy.clear()
    await proc.wait()
    await asyncio.sleep(0.5)
    loop_ms = np.array(busy) * 1000.0
    out.update(
        apply_loop_p99_ms=float(np.percentile(loop_ms, 99)) if loop_ms.size else None,
        apply_loop_max_ms=float(loop_ms.max()) if loop_ms.size else None,
    )
    lat = np.array(samples.values) * 1000.0
    age = np.array(ages.values) * 1000.0
    out.update(
        tick_age_p50_ms=float(np.percentile(age, 50)) if age.size else None,
        tick_age_p99_ms=float(np.percentile(age, 99)) if age.size else None,
        latency_rate_msgs_per_s=STEADY_RATE,
        latency_samples=int(lat.size),
        latency_p50_ms=float(np.percentile(lat, 50)) if lat.size else None,
        latency_p99_ms=float(np.percentile(lat, 99)) if lat.size else None,
        latency_max_ms=float(lat.max()) if lat.size else None,
    )
    d.request_stop()
    await asyncio.wait_for(task, 60)
    return out


async def steady(
    bootstrap: str, prices: str, events: str, rate: int, seconds: float, marks: dict[str, float]
) -> None:
    """Produce ``rate`` msgs/s for ``seconds`` (90% ticks stamped now, 10% positions),
    in 5 ms slices of create_batch/send_batch."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0)
    await producer.start()
    rnd = random.Random(3)
    enc = msgspec.json.encode
    slice_s = 0.005
    per_slice = max(1, int(rate * slice_s))
    t0 = time.perf_counter()
    k = 0
    try:
        while (elapsed := time.perf_counter() - t0) < seconds:
            batches: dict[tuple[str, int], Any] = {}
            now_ms = time.time_ns() // 1_000_000
            for _ in range(per_slice):
                if rnd.random() < 0.9:
                    s = rnd.choice(SYMBOLS)
                    topic, key = prices, s.encode()
                    marks[s] *= 1 + rnd.gauss(0, 1e-5)
                    val = enc({"symbol": s, "price": marks[s], "ts": now_ms})
                else:
                    a = f"acct-{rnd.randrange(1000):07d}"
                    s = rnd.choice(SYMBOLS)
                    topic, key = events, a.encode()
                    val = enc({"type": "position", "account": a, "symbol": s, "qty": 1.0,
                               "entry_price": marks[s], "ts": now_ms + k})  # fmt: skip
                k += 1
                p = _partition(key)
                b = batches.get((topic, p))
                if b is None:
                    b = batches[(topic, p)] = producer.create_batch()
                b.append(key=key, value=val, timestamp=None)
            for (topic, p), b in batches.items():
                b.close()
                await producer.send_batch(b, topic, partition=p)
            next_at = t0 + (elapsed // slice_s + 1) * slice_s
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await producer.flush()
    finally:
        await producer.stop()


async def _bench(messages: int, accounts: int) -> dict[str, Any]:
    from tests.support.tansu import TansuBroker, Topics, create_topics

    broker = TansuBroker()
    broker.start()
    try:
        t = Topics.fresh()
        await create_topics(broker.bootstrap, t.all(), partitions=PARTITIONS)
        g0 = time.perf_counter()
        prices, events = make_messages(messages, accounts)
        gen_s = time.perf_counter() - g0
        p_rate = await produce_fast(broker.bootstrap, t.prices, prices)
        e_rate = await produce_fast(broker.bootstrap, t.account_events, events)
        ceil = await ceiling(
            broker.bootstrap, t.prices, t.account_events, len(prices) + len(events)
        )
        with tempfile.TemporaryDirectory() as state:
            d = await daemon_run(broker.bootstrap, t, Path(state), len(prices), len(events))
        return {
            "messages": len(prices) + len(events),
            "ticks": len(prices),
            "account_events": len(events),
            "accounts": accounts,
            "generate_s": gen_s,
            "produce_prices_msgs_per_s": p_rate,
            "produce_events_msgs_per_s": e_rate,
            "ceiling_msgs_per_s": ceil,
            **d,
            "daemon_share_of_ceiling": d["daemon_msgs_per_s"] / ceil,
        }
    finally:
        broker.stop()


def bench_kafka(messages: int = 1_000_000, accounts: int = 100_000) -> dict[str, Any]:
    """Run the whole benchmark (starts and stops its own broker); returns the figures.

    The daemon logs as in production (JSON lines), here into a temporary file."""
    from monitor.logs import configure_logging

    log = tempfile.NamedTemporaryFile("w", prefix="bench-kafka-", suffix=".log", delete=False)  # noqa: SIM115
    configure_logging("info", json=True, stream=log)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(_bench(messages, accounts))
    return uvloop.run(_bench(messages, accounts))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "steady":
        _, _, bs, px, ev, rate, secs, marks = sys.argv
        import uvloop

        uvloop.run(steady(bs, px, ev, int(rate), float(secs), json.loads(marks)))
    else:
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
        acc = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
        print(json.dumps(bench_kafka(n, acc), indent=2))
