"""Deterministic synthetic cross-margin books for the demo.

For a scenario (:mod:`monitor.demo.scenarios`) and its seed, every account
gets:

- one to three sub-accounts (desks) among :data:`DESKS`, each position
  labelled with one of them (attribution by sub-account);
- positions on the scenario's instruments, each held with the scenario's
  probability (at least one per account), long with ``long_share``
  probability, opened at the price at the start of the replayed window (the
  first tick of the recording; instruments without ticks at their static
  mark); notionals log-normal around 20k with a heavier-tailed size per
  account; 4% of positions isolated, margined at 5x to 20x;
- collateral worth the cross notional divided by the account's leverage:
  USDT, and for some accounts part in BTC, ETH (haircut) or USDC;
- a leverage drawn from three groups: 60% between 1.5x and 5x, 28% between
  5x and 10x, 12% between 10x and 25x (log-uniform within each), which is
  what spreads the accounts over warning, critical and liquidatable as the
  crash deepens.

Events are written in account order at the scenario's start time, so the
book file merged before the recording applies before the first tick. The
same scenario, seed and size always give the same events and bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zstandard

from monitor.demo.scenarios import Scenario
from monitor.events.decode import Decoder
from monitor.events.schema import BalanceEvent, Event, PositionEvent, Tick, encode
from monitor.instruments.model import RiskParams
from monitor.sources.files import read_jsonl

DESKS = ("main", "momentum", "basis", "alts", "hedge")
LEVERAGE_GROUPS = ((0.6, 1.5, 5.0), (0.28, 5.0, 10.0), (0.12, 10.0, 25.0))
ISOLATED_SHARE = 0.04
ZSTD_LEVEL = 19


def start_prices(path: Path, params: RiskParams, start_ms: int) -> dict[str, float]:
    """The first price of each symbol at or after ``start_ms`` in a recording."""
    dec = Decoder(params)
    out: dict[str, float] = {}
    for line in read_jsonl(path):
        ev = dec.decode_event(line.raw)
        if isinstance(ev, Tick) and ev.ts >= start_ms and ev.symbol not in out:
            out[ev.symbol] = ev.price
    return out


def generate(
    scenario: Scenario,
    params: RiskParams,
    *,
    accounts: int | None = None,
    seed: int | None = None,
    prices: dict[str, float] | None = None,
) -> list[Event]:
    """The book's balance and position events."""
    n = scenario.accounts if accounts is None else accounts
    rng = np.random.default_rng(scenario.seed if seed is None else seed)
    marks = dict(scenario.static_marks)
    marks.update(prices if prices is not None else
                 start_prices(scenario.ticks_path(), params, scenario.start_ms))  # fmt: skip
    symbols = [s for s in scenario.hold if s in marks]
    ts = scenario.start_ms
    # per account: leverage, size, desks, holdings
    group = rng.choice(len(LEVERAGE_GROUPS), size=n, p=[g[0] for g in LEVERAGE_GROUPS])
    lo = np.array([LEVERAGE_GROUPS[g][1] for g in group])
    hi = np.array([LEVERAGE_GROUPS[g][2] for g in group])
    lev = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    scale = np.exp(rng.normal(0.0, 0.9, n))
    n_desks = rng.integers(1, 4, n)
    holds = rng.random((n, len(symbols))) < np.array([scenario.hold[s] for s in symbols])
    none = ~holds.any(axis=1)
    holds[none, 0] = True
    coll = rng.random((n, 3))
    events: list[Event] = []
    for a in range(n):
        account = f"acct-{a:05d}"
        desks = [DESKS[k] for k in sorted(rng.choice(len(DESKS), int(n_desks[a]), replace=False))]
        positions: list[PositionEvent] = []
        cross_notional = 0.0
        for j, sym in enumerate(symbols):
            if not holds[a, j]:
                continue
            mark = marks[sym]
            notional = float(20_000.0 * scale[a] * np.exp(rng.normal(0.0, 0.6)))
            side = 1.0 if rng.random() < scenario.long_share else -1.0
            qty = float(np.round(side * notional / mark, 6)) or side * 1e-6
            desk = desks[int(rng.integers(len(desks)))]
            if rng.random() < ISOLATED_SHARE:
                margin = round(abs(qty) * mark / float(rng.uniform(5.0, 20.0)), 2)
                positions.append(PositionEvent(account, sym, qty, mark, ts, "isolated", margin,
                                               desk))  # fmt: skip
            else:
                positions.append(PositionEvent(account, sym, qty, mark, ts, "cross", 0.0, desk))
                cross_notional += abs(qty) * mark
        equity = cross_notional / float(lev[a])
        usdt = equity
        bal: list[BalanceEvent] = []
        for k, (asset, share, haircut) in enumerate((
            ("BTC", scenario.btc_collateral, 0.05),
            ("ETH", scenario.eth_collateral, 0.05),
            ("USDC", scenario.usdc_collateral, 0.0),
        )):  # fmt: skip
            price = marks.get(asset, 1.0 if asset == "USDC" else 0.0)
            if coll[a, k] < share and price > 0.0:
                part = equity * float(rng.uniform(0.2, 0.5))
                usdt -= part
                amount = round(part / (price * (1.0 - haircut)), 8)
                bal.append(BalanceEvent(account, asset, amount, ts))
        events.append(BalanceEvent(account, "USDT", round(usdt, 2), ts))
        events.extend(bal)
        events.extend(positions)
    return events


def encode_book(events: list[Event]) -> bytes:
    return b"".join(encode(e) + b"\n" for e in events)


def write_book(path: Path, events: list[Event]) -> Path:
    """Write the events as zstd-compressed JSONL (plain JSONL unless ``.zst``)."""
    data = encode_book(events)
    if path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


__all__ = ["DESKS", "encode_book", "generate", "start_prices", "write_book"]
