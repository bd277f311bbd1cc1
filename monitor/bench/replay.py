"""Replay throughput on the standard synthetic book.

    monitor bench --suite replay [--accounts N]      (10,000 accounts at most)

The book is :mod:`monitor.bench.synthetic` (50 instruments, about five
positions per account) loaded directly; the stream is a random walk of
canonical tick lines in a plain JSONL file, spread uniformly over the
instruments and the BTC and ETH collateral prices, at 20,000 ticks per second
of event time. Each figure is the whole replay path: reading the file,
parsing, merging, applying, alert evaluation, sampling for the summary.
Alerts go nowhere (no sink).

- every tick evaluated in order (``window_ms = 0``), target >= 50,000
  ticks/s: on a calm book (:func:`calm_book`), there also through the
  reference path (one ``Engine.apply`` per tick) for the ratio, and on the
  book as generated, whose ~1.3% of accounts kept at risk make the alert
  engine re-evaluate on about one tick in twelve;
- conflated per event-time window (100 ms, ~2,000 ticks per window, and 1 s,
  ~20,000), target >= 1,000,000 ticks/s;
- the parser alone (lines/s), for reference.

Under each figure: the share of its time spent in the alert engine's
evaluations (``AlertEngine.evaluate``, the periodic poll included), and the
throughput of the rest of the path without it.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from monitor.alerts.config import AlertsConfig
from monitor.bench.report import Row
from monitor.bench.synthetic import build_book, generate
from monitor.book.layout import MODE_ISOLATED, P_ENTRY, P_ISO_MARGIN, P_MODE, P_QTY
from monitor.book.store import MarginBook
from monitor.replay.driver import Replay, ReplayOptions
from monitor.replay.parse import TickParser

SEED = 20240807
RATE_PER_S = 20_000  # ticks per second of event time
T0 = 1_700_000_000_000


def tick_file(path: Path, symbols: list[str], start: dict[str, float], n: int, seed: int) -> Path:
    """``n`` canonical tick lines: a random walk (2 bp per tick) at ``RATE_PER_S``."""
    rng = np.random.default_rng(seed)
    sym = rng.integers(0, len(symbols), n)
    steps = rng.normal(0.0, 0.0002, n)
    price = np.array([start[s] for s in symbols])
    out = np.empty(n)
    level = np.zeros(len(symbols))
    # cumulative log-move per symbol, in stream order
    for k in range(len(symbols)):
        idx = np.flatnonzero(sym == k)
        level_k = np.cumsum(steps[idx]) + level[k]
        out[idx] = price[k] * np.exp(level_k)
    digits = np.clip(5 - np.floor(np.log10(out)).astype(int), 0, 8)
    ts = T0 + (np.arange(n) * 1000) // RATE_PER_S
    names = [s.encode() for s in symbols]
    lines = [
        b'{"type":"tick","symbol":"%s","price":%s,"ts":%d}'
        % (names[s], repr(round(float(p), int(d))).encode(), t)
        for s, p, d, t in zip(sym.tolist(), out.tolist(), digits.tolist(), ts.tolist(),
                              strict=True)
    ]  # fmt: skip
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def calm_book(accounts: int) -> MarginBook:
    """The synthetic book with every account at a margin ratio of at most 0.5
    (USDT added where needed) and isolated positions margined at 3x: a market
    between crashes, where liquidatable accounts have been liquidated. The
    generated book keeps about 1.3% of its accounts (and more isolated
    positions) at warning or beyond for good, and every tick on them is
    re-evaluated."""
    syn = generate(accounts)
    book = build_book(syn)
    n = book.n_accounts
    mm, eq = book.maintenance_margin, book.equity
    short = np.maximum(2.0 * mm - eq, 0.0)
    who = np.flatnonzero(short > 0.0)
    usdt = book.params.asset_id["USDT"]
    book.load_balances(who, np.full(who.size, usdt), book.bal[usdt, :n][who] + short[who] + 1.0)
    # isolated positions margined at 3x instead of 10x
    alive = book.alive_positions()
    iso = alive[book.pos_i[P_MODE, alive] == MODE_ISOLATED]
    book.pos_f[P_ISO_MARGIN, iso] = np.abs(book.pos_f[P_QTY, iso]) * book.pos_f[P_ENTRY, iso] / 3
    book.resync(record=False)
    return book


def _replay(
    accounts: int, ticks: Path, window_ms: int, *, calm: bool = False, compiled: bool = True
) -> tuple[float, int, int, float]:
    """``(seconds, ticks, alerts, seconds in AlertEngine.evaluate)``."""
    syn = generate(accounts)
    book = calm_book(accounts) if calm else build_book(syn)
    cfg = AlertsConfig()
    replay = Replay(
        syn.params,
        ReplayOptions((ticks,), window_ms=window_ms, compiled_ticks=compiled),
        alerts_config=cfg,
        registry=CollectorRegistry(),
        book=book,
    )
    alerts = replay.alert_engine
    evaluate = alerts.evaluate
    spent = [0.0]

    def timed(*args: Any, **kw: Any) -> Any:
        # the periodic poll evaluates through this too (self.evaluate)
        t0 = time.perf_counter()
        try:
            return evaluate(*args, **kw)
        finally:
            spent[0] += time.perf_counter() - t0

    alerts.evaluate = timed  # type: ignore[method-assign]
    t = time.perf_counter()
    result = asyncio.run(replay.run())
    return time.perf_counter() - t, result.stats.ticks, result.stats.alerts, spent[0]


def bench_replay(
    accounts: int = 10_000, every_tick: int = 100_000, conflated: int = 2_000_000
) -> list[Row]:
    """The replay figures (rows for :func:`monitor.bench.report.render`)."""
    import structlog

    # as `monitor replay` logs by default: warnings only, loggers cached
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(30), cache_logger_on_first_use=True
    )
    syn = generate(accounts)
    params = syn.params
    symbols = [*params.symbols[: params.n_instruments], "BTC", "ETH"]
    start = {s: float(syn.prices[k]) for k, s in enumerate(params.symbols[: params.n_instruments])}
    start["BTC"], start["ETH"] = float(syn.prices[0]), float(syn.prices[1])
    rows: list[Row] = []
    n_acc = f"{accounts:,} accounts"
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        small = tick_file(Path(tmp) / "every.jsonl", symbols, start, every_tick, SEED)
        big = tick_file(Path(tmp) / "conflated.jsonl", symbols, start, conflated, SEED + 1)
        _replay(min(accounts, 1000), small, 0)  # compile the kernels
        _replay(min(accounts, 1000), small, 100)
        cases = (
            ("calm book", True, True),
            ("calm book, reference path", True, False),
            ("book as generated", False, True),
        )
        for label, calm, compiled in cases:
            secs, n, alerts, in_alerts = _replay(accounts, small, 0, calm=calm, compiled=compiled)
            rate = n / secs
            target = ">= 50,000" if compiled else ""
            rows.append(Row(f"replay every tick, {label}", rate, "ticks/s", target,
                            rate >= 50_000 if compiled else None))  # fmt: skip
            rows += _detail(n_acc, n, alerts, secs, in_alerts)
        for window in (100, 1000):
            for label, calm in (("calm book", True), ("book as generated", False)):
                secs, n, alerts, in_alerts = _replay(accounts, big, window, calm=calm)
                rate = n / secs
                rows.append(Row(f"replay {window} ms windows, {label}", rate, "ticks/s",
                                ">= 1,000,000", rate >= 1_000_000))  # fmt: skip
                rows += _detail(n_acc, n, alerts, secs, in_alerts)
        data = big.read_bytes()
        buf = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(buf == 10).astype(np.int64)
        starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
        parser = TickParser(params.symbols)
        t = time.perf_counter()
        parser.parse(buf, starts, ends)
        secs = time.perf_counter() - t
        rows.append(Row("tick line parser alone", ends.shape[0] / secs, "lines/s"))
    return rows


def _detail(n_acc: str, n: int, alerts: int, secs: float, in_alerts: float) -> list[Row]:
    """The row's setting, and where its time went: the alert engine's evaluations
    (AlertEngine.evaluate, periodic polls included) against the rest."""
    return [
        Row(f"  alerts emitted ({n_acc}, {n:,} ticks)", alerts, ""),
        Row("  time in AlertEngine.evaluate", 100.0 * in_alerts / secs, "%"),
        Row("  the rest of the path alone", n / (secs - in_alerts), "ticks/s"),
    ]


def rows(accounts: int) -> list[Row]:
    """The ``replay`` suite of ``monitor bench`` (10,000 accounts at most)."""
    return bench_replay(min(accounts, 10_000))


__all__ = ["bench_replay", "calm_book", "rows", "tick_file"]
