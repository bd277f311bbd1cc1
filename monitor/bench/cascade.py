"""Benchmark of the market-level stress: cascade rounds and the liquidation map.

    monitor bench --suite cascade [--accounts N]

builds a deterministic synthetic book over the five default instruments
(about 2.4 cross positions per account, long-biased, leverage 2x..50x, some
BTC/ETH collateral), then times a snapshot, a 10-round cascade of BTC=-10%
and one full liquidation map (-30%..+30% by 1%, every underlying). The
cascade's depths are scaled to the book's size so that it keeps going for the
10 rounds (the figure is the cost of 10 real rounds, not of an early stop).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from monitor.bench.report import Row
from monitor.book import MarginBook
from monitor.cascade import liquidation_map, run_cascade, take_snapshot
from monitor.instruments import RiskParams, load_instruments

SEED = 20240806
PRICES = {"BTC-PERP": 64000.0, "ETH-PERP": 3000.0, "SOL-PERP": 150.0, "DOGE-PERP": 0.12,
          "HYPE-PERP": 30.0}  # fmt: skip
HOLD = {"BTC-PERP": 0.8, "ETH-PERP": 0.7, "SOL-PERP": 0.4, "DOGE-PERP": 0.25, "HYPE-PERP": 0.25}


DEPTH_PER_MILLION = 12.0  # times the configured depths, per million accounts


def scaled_params(params: RiskParams, accounts: int) -> RiskParams:
    """The default instruments with depths proportional to the book's size, deep
    enough that the BTC=-10% cascade neither stops early nor wipes the book out."""
    scale = DEPTH_PER_MILLION * accounts / 1_000_000
    inst = tuple(dataclasses.replace(i, depth_usd=i.depth_usd * scale) for i in params.instruments)
    return RiskParams(inst, params.assets, source="bench")


def synthetic_book(accounts: int, seed: int = SEED) -> MarginBook:
    params = scaled_params(load_instruments(), accounts)
    rng = np.random.default_rng(seed)
    sym_ids = [params.symbol_id[s] for s in PRICES]
    price = np.array([PRICES[s] for s in PRICES])
    accts, syms = [], []
    for k, s in enumerate(PRICES):
        who = np.flatnonzero(rng.random(accounts) < HOLD[s])
        accts.append(who)
        syms.append(np.full(who.size, sym_ids[k]))
    acct = np.concatenate(accts)
    sym = np.concatenate(syms)
    n = acct.size
    notional = np.exp(rng.normal(np.log(4000.0), 1.0, n))
    side = np.where(rng.random(n) < 0.7, 1.0, -1.0)
    mark = price[sym]
    qty = side * notional / mark
    entry = mark * (1.0 + rng.normal(0.0, 0.03, n))
    gross = np.bincount(acct, weights=notional, minlength=accounts)
    lev = np.exp(rng.uniform(np.log(2.0), np.log(50.0), accounts))
    usdt, btc, eth = (params.asset_id[a] for a in ("USDT", "BTC", "ETH"))
    b_acct = [np.arange(accounts)]
    b_asset = [np.full(accounts, usdt)]
    b_amt = [gross / lev * 0.8]
    for k, share, px in ((btc, 0.2, PRICES["BTC-PERP"]), (eth, 0.1, PRICES["ETH-PERP"])):
        who = np.flatnonzero(rng.random(accounts) < share)
        b_acct.append(who)
        b_asset.append(np.full(who.size, k))
        b_amt.append(gross[who] / lev[who] * 0.2 / px)
    book = MarginBook(params, accounts=accounts, positions=n)
    book.add_accounts([f"acct-{i:07d}" for i in range(accounts)])
    for sid, px in zip(sym_ids, price, strict=True):
        book.apply_tick(sid, float(px), 0)
    for name in ("BTC", "ETH"):
        book.apply_tick(params.symbol_id[name], PRICES[f"{name}-PERP"], 0)
    book.load_balances(np.concatenate(b_acct), np.concatenate(b_asset), np.concatenate(b_amt))
    book.load_positions(acct, sym, qty, entry)
    return book


def bench_cascade(accounts: int) -> dict[str, Any]:
    """Build the book, then time: snapshot, 10 cascade rounds, one liquidation map."""
    t0 = time.perf_counter()
    book = synthetic_book(accounts)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    snap = take_snapshot(book)
    snapshot_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = run_cascade(snap, {"BTC": -0.10}, impact="linear", max_rounds=10)
    cascade_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = liquidation_map(snap)
    map_s = time.perf_counter() - t0
    return {
        "accounts": accounts,
        "positions": snap.n_positions,
        "build_s": build_s,
        "snapshot_s": snapshot_s,
        "cascade_s": cascade_s,
        "cascade_rounds": len(result.rounds),
        "cascade_stopped": result.stopped,
        "cascade_accounts_liquidated": result.accounts_liquidated,
        "cascade_notional_liquidated": result.notional_liquidated,
        "cascade_amplification": result.amplification,
        "map_s": map_s,
        "map_grid_points": int(m.moves.size),
        "map_underlyings": len(m.underlyings),
        "map_btc_minus_10pct_notional": m.at("BTC", -0.1)[0],
    }


def rows(accounts: int) -> list[Row]:
    r = bench_cascade(accounts)
    big = accounts >= 1_000_000
    c = float(r["cascade_s"])
    return [
        Row(f"cascade book ({r['positions']:,} positions): accounts", accounts, ""),
        Row(
            f"cascade BTC=-10%, {r['cascade_rounds']} rounds",
            c,
            "s",
            "<= 5 s" if big else "",
            c <= 5.0 if big else None,
        ),
        Row("  accounts liquidated", float(r["cascade_accounts_liquidated"]), ""),
        Row("liquidation map (61 moves x every underlying)", float(r["map_s"]), "s"),
    ]
