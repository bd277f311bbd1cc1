"""Load generators of the end-to-end benches: what they write to Kafka, and how.

- :func:`mixed_load`: N wire messages over 100,000 accounts (one balance per
  account, positions, ticks for the rest) -- the ``--kafka`` ingest load;
- :func:`events_load`: account events only (the ``--scale`` load: only the
  account-events partitions are shared out between instances);
- :func:`band_load`: a book where a band of highly leveraged BTC-PERP accounts
  sits around the alert thresholds (the ``--alert-latency`` book);
- :func:`produce`: writes a load with ``create_batch``/``send_batch`` (about
  ten times the rate of one ``send()`` per message);
- :func:`steady`: a constant message rate (ticks stamped with the wall time at
  produce, balance updates), paced against the clock so that the achieved rate
  is the asked one unless the producer cannot keep up (it reports what it did).

``python -m monitor.bench.load produce|steady JSON`` runs :func:`produce_job`
or :func:`steady` in a process of its own and prints its figures as one JSON
line: the benches keep the producer off the process they measure.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec

Message = tuple[bytes, bytes]

SYMBOLS = ("BTC-PERP", "ETH-PERP", "SOL-PERP", "DOGE-PERP", "HYPE-PERP")
MARKS = {
    "BTC-PERP": 60000.0,
    "ETH-PERP": 3000.0,
    "SOL-PERP": 150.0,
    "DOGE-PERP": 0.15,
    "HYPE-PERP": 30.0,
}
# Synthetic event times of bulk loads: in the past, so that the wall-clock
# stamps of a steady stream that follows are never stale.
T0_MS = 1_700_000_000_000
_enc = msgspec.json.encode


def partition_of(key: bytes, partitions: int) -> int:
    """A stable key -> partition map (what matters is that a key keeps its partition)."""
    return zlib.crc32(key) % partitions


def account_id(i: int) -> str:
    return f"acct-{i:07d}"


@dataclass
class Load:
    """Wire messages (key, value) for the two input topics, in production order."""

    prices: list[Message] = field(default_factory=list)
    events: list[Message] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prices) + len(self.events)


def _balance(a: str, amount: float, ts: int) -> Message:
    return a.encode(), _enc(
        {"type": "balance", "account": a, "asset": "USDT", "amount": amount, "ts": ts}
    )


def _position(a: str, s: str, qty: float, entry: float, ts: int) -> Message:
    return a.encode(), _enc(
        {"type": "position", "account": a, "symbol": s, "qty": qty, "entry_price": entry, "ts": ts}
    )


def _tick(s: str, price: float, ts: int) -> Message:
    return s.encode(), _enc({"symbol": s, "price": price, "ts": ts})


def _random_positions(
    rnd: random.Random, out: list[Message], n: int, accounts: range, ts: int
) -> int:
    """``n`` cross positions of 1k..100k notional on random accounts of ``accounts``."""
    for _ in range(n):
        a = account_id(rnd.choice(accounts))
        s = rnd.choice(SYMBOLS)
        ts += 1
        notional = rnd.uniform(1e3, 1e5)
        qty = rnd.choice((-1, 1)) * notional / MARKS[s]
        out.append(_position(a, s, qty, MARKS[s] * (1 + rnd.gauss(0, 0.01)), ts))
    return ts


def mixed_load(messages: int, accounts: int, seed: int = 1) -> Load:
    """One USDT balance per account (2e4..2e5), about two positions per account,
    ticks (a random walk on five symbols) for the rest; at least 10% ticks."""
    rnd = random.Random(seed)
    n_events = min(max(accounts, int(messages * 0.3)), messages - messages // 10)
    n_ticks = messages - n_events
    ts = T0_MS
    load = Load()
    for i in range(min(accounts, n_events)):
        load.events.append(_balance(account_id(i), rnd.uniform(2e4, 2e5), ts))
    ts = _random_positions(rnd, load.events, n_events - len(load.events), range(accounts), ts)
    marks = dict(MARKS)
    for _ in range(n_ticks):
        s = rnd.choice(SYMBOLS)
        marks[s] *= 1 + rnd.gauss(0, 0.0005)
        ts += 1
        load.prices.append(_tick(s, marks[s], ts))
    return load


def events_load(messages: int, accounts: int, seed: int = 2, first: int = 0) -> Load:
    """Account events only: a balance per account (ids from ``first``), then positions."""
    rnd = random.Random(seed)
    load = Load()
    ts = T0_MS
    ids = range(first, first + accounts)
    for i in ids[:messages]:
        load.events.append(_balance(account_id(i), rnd.uniform(2e4, 2e5), ts))
    _random_positions(rnd, load.events, messages - len(load.events), ids, ts)
    return load


def warmup_load(accounts: int = 200, seed: int = 3) -> Load:
    """A few accounts and one tick per symbol: run before a measurement, so that the
    group has settled and every code path has run once when the clock starts."""
    rnd = random.Random(seed)
    load = Load()
    ts = T0_MS - 10_000_000
    for s in SYMBOLS:
        load.prices.append(_tick(s, MARKS[s], ts))
    names = range(10_000_000, 10_000_000 + accounts)  # never collide with the load's
    for i in names:
        load.events.append(_balance(account_id(i), rnd.uniform(2e4, 2e5), ts))
    _random_positions(rnd, load.events, 2 * accounts, names, ts)
    return load


# The alert-latency book: accounts [0, band) hold one BTC-PERP position of
# BAND_NOTIONAL at 200x-300x leverage, with the margin ratio at the base price
# spread over BAND_RATIOS; half long, half short, so a price wave moves some of
# them up through WARNING / CRITICAL while it moves others down, both ways.
BAND_NOTIONAL = 40_000.0  # inside BTC-PERP's first bracket (maintenance rate 0.004)
BAND_MMR = 0.004
BAND_RATIOS = (0.72, 0.98)


def band_load(accounts: int, band: int, seed: int = 4) -> Load:
    """``band`` accounts near the thresholds, the others healthy (as in :func:`mixed_load`,
    about two positions each); one tick per symbol at :data:`MARKS`."""
    rnd = random.Random(seed)
    load = Load()
    ts = T0_MS
    for s in SYMBOLS:
        load.prices.append(_tick(s, MARKS[s], ts))
    p0 = MARKS["BTC-PERP"]
    for i in range(band):
        a = account_id(i)
        r0 = BAND_RATIOS[0] + (BAND_RATIOS[1] - BAND_RATIOS[0]) * rnd.random()
        side = 1.0 if i % 2 == 0 else -1.0
        load.events.append(_balance(a, BAND_MMR * BAND_NOTIONAL / r0, ts))
        load.events.append(_position(a, "BTC-PERP", side * BAND_NOTIONAL / p0, p0, ts))
    for i in range(band, accounts):
        load.events.append(_balance(account_id(i), rnd.uniform(2e4, 2e5), ts))
    _random_positions(rnd, load.events, 2 * (accounts - band), range(band, accounts), ts)
    return load


# ---------------------------------------------------------------- producing


def _producer(bootstrap: str, **kw: Any) -> Any:
    from aiokafka import AIOKafkaProducer

    # acks=1: the broker used for benches has no idempotent producers.
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, **kw)


async def produce(
    bootstrap: str, topic: str, msgs: Sequence[Message], partitions: int
) -> tuple[dict[int, int], float]:
    """Write ``msgs`` with create_batch/send_batch, keyed to partitions by
    :func:`partition_of`; returns (messages per partition, msgs/s)."""
    producer = _producer(bootstrap, max_batch_size=1 << 20, linger_ms=5)
    await producer.start()
    t0 = time.perf_counter()
    counts: dict[int, int] = {}
    try:
        by_part: dict[int, list[Message]] = {}
        for k, v in msgs:
            by_part.setdefault(partition_of(k, partitions), []).append((k, v))
        futs = []
        for p, part in by_part.items():
            counts[p] = len(part)
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
    return counts, len(msgs) / max(1e-9, time.perf_counter() - t0)


@dataclass
class ProduceJob:
    """A load to generate and write (in a process of its own)."""

    bootstrap: str
    prices: str
    events: str
    prices_partitions: int
    events_partitions: int
    kind: str  # "mixed" | "events"
    messages: int
    accounts: int


async def produce_job(job: ProduceJob) -> dict[str, Any]:
    g0 = time.perf_counter()
    load = (mixed_load if job.kind == "mixed" else events_load)(job.messages, job.accounts)
    generate_s = time.perf_counter() - g0
    out: dict[str, Any] = {"generate_s": generate_s, "counts": {}, "rates": {}}
    for topic, msgs, parts in (
        (job.prices, load.prices, job.prices_partitions),
        (job.events, load.events, job.events_partitions),
    ):
        if msgs:
            counts, rate = await produce(job.bootstrap, topic, msgs, parts)
            out["counts"][topic] = counts
            out["rates"][topic] = rate
    return out


@dataclass
class SteadyPlan:
    """A constant-rate stream: ``tick_share`` ticks (random walk on :data:`SYMBOLS`
    from ``marks``, except ``wave_symbol`` which follows
    ``base * (1 + wave_amplitude * sin(2 pi t / wave_period_s))``), the rest USDT
    balance updates of accounts ``[accounts_lo, accounts_hi)`` (2e4..2e5).

    Every ``step_s`` the producer tops up to ``rate * elapsed``: one batch per
    partition per step, each message stamped as it is made, just before the
    batch is sent (the step adds nothing to a tick's measured latency). The
    step sets how many batches the broker stores: Tansu's in-memory storage
    pays per stored batch on every fetch, so a 5 ms step (1,600 batches/s on
    4 + 4 partitions) saturated its core within 20 s and put the bare
    consumer's produce -> getmany p99 at 164 ms over 30 s, where a 20 ms
    step kept Tansu under 30 % of a core and that p99 at 14.8 ms (the same
    run otherwise). Apache Kafka's fetch is an index lookup and does not
    care."""

    bootstrap: str
    prices: str
    events: str
    prices_partitions: int
    events_partitions: int
    rate: float
    seconds: float
    marks: dict[str, float]
    tick_share: float = 0.9
    accounts_lo: int = 0
    accounts_hi: int = 100_000
    wave_symbol: str = ""
    wave_amplitude: float = 0.0
    wave_period_s: float = 10.0
    seed: int = 5
    step_s: float = 0.02


async def steady(plan: SteadyPlan) -> dict[str, Any]:
    """Produce ``plan.rate`` msgs/s for ``plan.seconds``; returns what was sent
    (per topic and partition), the achieved rate and the worst backlog."""
    producer = _producer(plan.bootstrap, linger_ms=0)
    await producer.start()
    rnd = random.Random(plan.seed)
    marks = dict(plan.marks)
    base = marks.get(plan.wave_symbol, 0.0)
    counts: dict[str, dict[int, int]] = {plan.prices: {}, plan.events: {}}
    sent = 0
    worst_backlog = 0
    t0 = time.perf_counter()
    t_last = t0
    try:
        while (now := time.perf_counter()) - t0 < plan.seconds:
            due = int(plan.rate * (now - t0)) - sent
            worst_backlog = max(worst_backlog, due)
            batches: dict[tuple[str, int], Any] = {}
            for _ in range(max(0, due)):
                ts = time.time_ns() // 1_000_000
                if rnd.random() < plan.tick_share:
                    s = SYMBOLS[rnd.randrange(len(SYMBOLS))]
                    if s == plan.wave_symbol:
                        phase = 2 * math.pi * (time.perf_counter() - t0) / plan.wave_period_s
                        marks[s] = base * (1 + plan.wave_amplitude * math.sin(phase))
                    else:
                        marks[s] *= 1 + rnd.gauss(0, 1e-5)
                    topic, parts = plan.prices, plan.prices_partitions
                    key, val = _tick(s, marks[s], ts)
                else:
                    a = account_id(rnd.randrange(plan.accounts_lo, plan.accounts_hi))
                    topic, parts = plan.events, plan.events_partitions
                    key, val = _balance(a, rnd.uniform(2e4, 2e5), ts)
                p = partition_of(key, parts)
                b = batches.get((topic, p))
                if b is None:
                    b = batches[(topic, p)] = producer.create_batch()
                if b.append(key=key, value=val, timestamp=None) is None:
                    b.close()
                    await producer.send_batch(b, topic, partition=p)
                    b = batches[(topic, p)] = producer.create_batch()
                    b.append(key=key, value=val, timestamp=None)
                counts[topic][p] = counts[topic].get(p, 0) + 1
                sent += 1
            for (topic, p), b in batches.items():
                b.close()
                await producer.send_batch(b, topic, partition=p)
            if due > 0:
                t_last = time.perf_counter()
            await asyncio.sleep(max(0.0, plan.step_s - (time.perf_counter() - now)))
        await producer.flush()
    finally:
        await producer.stop()
    return {
        "sent": sent,
        "seconds": t_last - t0,
        "rate": sent / max(1e-9, t_last - t0),
        "worst_backlog": worst_backlog,
        "counts": counts,
    }


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("produce", "steady"):
        sys.stderr.write("usage: python -m monitor.bench.load produce|steady JSON\n")
        return 2
    what, spec = argv[0], json.loads(argv[1])
    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        run = asyncio.run
    if what == "produce":
        out = run(produce_job(ProduceJob(**spec)))
    else:
        out = run(steady(SteadyPlan(**spec)))
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


def job_json(job: ProduceJob | SteadyPlan) -> str:
    return json.dumps(asdict(job))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
