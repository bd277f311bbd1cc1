"""A deterministic synthetic book: power-law holdings over 50 symbols.

Every account holds USDT; some also hold BTC, ETH or USDC collateral. Nearly
every account holds BTC-PERP and ETH-PERP, and a long tail of 48 instruments is
held with probability falling as a power of its rank, scaled so the book has
about five positions per account. Notionals are log-normal, sides random, 5%
of positions isolated. Same ``seed`` and size, same book.

Columns use narrow dtypes (int32 account slots, int8 symbols, modes and
assets, float32 quantities and prices): at a million accounts the generated book is
~130 MB, and it is alive while the book is built from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from monitor.book import MODE_CROSS, MODE_ISOLATED, MarginBook
from monitor.instruments import RiskParams, parse_instruments

N_SYMBOLS = 50
POSITIONS_PER_ACCOUNT = 5.0
BTC_SHARE = 0.95
ETH_SHARE = 0.90
SEED = 20240805


def synthetic_params() -> RiskParams:
    btc = [[0, 0.004], [50000, 0.005], [500000, 0.01], [8000000, 0.025], [50000000, 0.05]]
    alt = [[0, 0.01], [5000, 0.015], [50000, 0.02], [200000, 0.05], [500000, 0.1]]
    instruments: dict[str, object] = {
        "BTC-PERP": {"underlying": "BTC", "brackets": btc, "depth_usd": 2e9},
        "ETH-PERP": {"underlying": "ETH", "brackets": btc, "depth_usd": 1e9},
    }
    for k in range(2, N_SYMBOLS):
        instruments[f"ALT{k:02d}-PERP"] = {
            "underlying": f"ALT{k:02d}",
            "brackets": alt,
            "depth_usd": 5e7,
        }
    return parse_instruments(
        {
            "assets": {
                "USDT": {"price": 1.0},
                "USDC": {"price_symbol": "USDC", "price": 1.0},
                "BTC": {"price_symbol": "BTC", "haircut": 0.05},
                "ETH": {"price_symbol": "ETH", "haircut": 0.05},
            },
            "instruments": instruments,
        },
        source="synthetic",
    )


def holding_shares() -> npt.NDArray[np.float64]:
    """Share of accounts holding each symbol (BTC, ETH, then the power-law tail)."""
    rank = np.arange(1, N_SYMBOLS - 1, dtype=np.float64)
    tail = rank**-0.9
    tail *= (POSITIONS_PER_ACCOUNT - BTC_SHARE - ETH_SHARE) / tail.sum()
    return np.concatenate(([BTC_SHARE, ETH_SHARE], np.minimum(tail, 0.85)))


@dataclass(frozen=True)
class SyntheticBook:
    params: RiskParams
    prices: npt.NDArray[np.float64]  # per instrument
    acct: npt.NDArray[np.int32]
    sym: npt.NDArray[np.int8]
    qty: npt.NDArray[np.float32]
    entry: npt.NDArray[np.float32]
    mode: npt.NDArray[np.int8]
    bal_acct: npt.NDArray[np.int32]
    bal_asset: npt.NDArray[np.int8]
    bal_amount: npt.NDArray[np.float64]
    n_accounts: int

    def account_ids(self) -> list[str]:
        return [f"acct-{i:07d}" for i in range(self.n_accounts)]


def generate(n_accounts: int, seed: int = SEED) -> SyntheticBook:
    params = synthetic_params()
    rng = np.random.default_rng(seed)
    n_instr = params.n_instruments
    prices = np.empty(n_instr)
    prices[0], prices[1] = 60000.0, 3000.0
    prices[2:] = np.exp(rng.uniform(np.log(0.05), np.log(500.0), n_instr - 2))
    shares = holding_shares()
    accts: list[npt.NDArray[np.int32]] = []
    syms: list[npt.NDArray[np.int8]] = []
    for s in range(n_instr):
        holders = np.flatnonzero(rng.random(n_accounts) < shares[s]).astype(np.int32)
        accts.append(holders)
        syms.append(np.full(holders.size, s, dtype=np.int8))
    acct = np.concatenate(accts)
    sym = np.concatenate(syms)
    del accts, syms
    n = acct.size
    notional = np.exp(rng.normal(np.log(8000.0), 1.2, n))
    side = np.where(rng.random(n) < 0.55, 1.0, -1.0)
    qty = side * notional
    del side
    qty /= prices[sym]
    entry = rng.normal(0.0, 0.04, n)
    entry += 1.0
    entry *= prices[sym]
    # kept as float32 (the book's columns are float64 of these values): 40 MB less
    # alive next to a million-account book while it is built
    qty32, entry32 = qty.astype(np.float32), entry.astype(np.float32)
    del qty, entry
    mode = np.where(rng.random(n) < 0.05, MODE_ISOLATED, MODE_CROSS).astype(np.int8)
    # collateral: USDT for everyone sized to a leverage of 2x..20x; some BTC/ETH/USDC
    gross = np.bincount(acct, weights=notional, minlength=n_accounts)
    lev = np.exp(rng.uniform(np.log(2.0), np.log(20.0), n_accounts))
    b_acct = [np.arange(n_accounts, dtype=np.int32)]
    b_asset = [np.zeros(n_accounts, dtype=np.int8)]
    b_amt = [gross / lev * 0.7]
    for k, share, price in ((1, 0.10, 1.0), (2, 0.30, 60000.0), (3, 0.20, 3000.0)):
        who = np.flatnonzero(rng.random(n_accounts) < share).astype(np.int32)
        b_acct.append(who)
        b_asset.append(np.full(who.size, k, dtype=np.int8))
        b_amt.append(gross[who] / lev[who] * 0.3 / price)
    return SyntheticBook(
        params,
        prices,
        acct,
        sym,
        qty32,
        entry32,
        mode,
        np.concatenate(b_acct),
        np.concatenate(b_asset),
        np.concatenate(b_amt),
        n_accounts,
    )


def build_book(syn: SyntheticBook) -> MarginBook:
    # positions are sized by load_positions itself (exactly, with per-group room)
    book = MarginBook(syn.params, accounts=syn.n_accounts, positions=0)
    book.add_accounts(syn.account_ids())
    p = syn.params
    for s in range(p.n_instruments):
        book.sym_price[s] = syn.prices[s]
        book.sym_ts[s] = 0
    for name, price in (("BTC", syn.prices[0]), ("ETH", syn.prices[1])):
        s = p.symbol_id[name]
        book.sym_price[s] = price
        book.sym_ts[s] = 0
        for k in range(len(p.assets)):
            if p.asset_price_sym[k] == s:
                book.asset_price[k] = price
    book.load_balances(syn.bal_acct, syn.bal_asset, syn.bal_amount)
    # isolated positions margined at 10x; cross ones carry none
    iso_margin = np.abs(syn.qty)
    iso_margin *= syn.entry
    iso_margin /= np.float32(10.0)
    iso_margin[syn.mode != MODE_ISOLATED] = 0.0
    # every position stamped at ts 1 (one value, broadcast: no column of it here)
    ts = np.broadcast_to(np.int64(1), syn.qty.shape)
    book.load_positions(
        syn.acct, syn.sym, syn.qty, syn.entry, mode=syn.mode, iso_margin=iso_margin, ts=ts
    )
    return book
