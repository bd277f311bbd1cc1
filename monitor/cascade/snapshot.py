"""A frozen copy of the book's cross-margin state, for what-if computations.

The cascade and the liquidation map move prices and close accounts on this
copy; the live book is never touched, so the daemon takes the snapshot on its
event loop (a few array copies) and hands it to the market worker process.

Only *cross* positions are copied: an isolated position is a separate unit
on its own margin and has no effect on the account's cross part. Positions are
sorted by symbol, so each instrument's positions are one contiguous slice and
per-instrument work (brackets, price factors) is a slice operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from monitor.book.layout import MODE_CROSS, P_ACCT, P_ENTRY, P_MODE, P_QTY, P_SYM
from monitor.book.store import MarginBook
from monitor.instruments.model import RiskParams

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class BookSnapshot:
    """Arrays copied out of a :class:`MarginBook` (one row per cross position)."""

    params: RiskParams
    account_ids: Sequence[str]
    acct: I64  # owning account slot
    sym: I64  # instrument id, ascending
    qty: F64
    entry: F64
    mark: F64  # mark at the snapshot (the entry price where the symbol has no tick yet)
    bal: F64  # (assets, accounts) balances
    sym_price: F64  # last tick per symbol, NaN where none yet
    asset_price: F64  # value of one unit of each asset
    ts: int  # event time of the latest event applied to the book

    @property
    def n_accounts(self) -> int:
        return len(self.account_ids)

    @property
    def n_positions(self) -> int:
        return int(self.qty.shape[0])

    @property
    def bounds(self) -> I64:
        """Positions of instrument ``s`` are ``[bounds[s], bounds[s + 1])``."""
        return symbol_bounds(self.sym, self.params.n_instruments)

    def collateral_weights(self) -> F64:
        """Haircut value of one unit of each asset at the snapshot prices."""
        out: F64 = self.asset_price * (1.0 - self.params.asset_haircut)
        return out


def take_snapshot(book: MarginBook) -> BookSnapshot:
    """Copy the cross part of ``book`` (positions, balances, prices)."""
    n = book.n_accounts
    alive = book.alive_positions()
    cross = alive[book.pos_i[P_MODE, alive] == MODE_CROSS]
    sym = book.pos_i[P_SYM, cross].astype(np.int64)
    if sym.size > 1 and np.any(sym[1:] < sym[:-1]):
        # Few distinct symbols: a stable sort on 16-bit keys is a radix sort.
        key = sym.astype(np.int16) if book.params.n_instruments < 2**15 else sym
        order = np.argsort(key, kind="stable")
        cross, sym = cross[order], sym[order]
    qty = book.pos_f[P_QTY, cross].copy()
    entry = book.pos_f[P_ENTRY, cross].copy()
    mark = book.sym_price[sym]
    mark = np.where(np.isnan(mark), entry, mark)
    return BookSnapshot(
        params=book.params,
        account_ids=list(book.account_ids),
        acct=book.pos_i[P_ACCT, cross].astype(np.int64),
        sym=sym,
        qty=qty,
        entry=entry,
        mark=mark,
        bal=book.bal[:, :n].copy(),
        sym_price=book.sym_price.copy(),
        asset_price=book.asset_price.copy(),
        ts=int(book.last_event_ts),
    )


def sums(index: npt.NDArray[np.integer[Any]], weights: F64, n: int) -> F64:
    """``out[i] = sum of weights[index == i]`` for ``i < n`` (``np.bincount``, typed)."""
    return cast(F64, np.bincount(index, weights=weights, minlength=n))


def symbol_bounds(sym: I64, n_instruments: int) -> I64:
    """Slice bounds of each instrument in an array sorted by instrument id."""
    out: I64 = np.searchsorted(sym, np.arange(n_instruments + 1)).astype(np.int64)
    return out


def bracket_index(params: RiskParams, bounds: I64, notional: F64, *, below: bool = False) -> I64:
    """Bracket of each notional (positions sorted by instrument, sliced by ``bounds``):
    the last one whose floor is ``<= notional``; with ``below``, the last one whose
    floor is ``< notional`` (the bracket a falling notional is in just below it)."""
    out = np.zeros(notional.shape[0], dtype=np.int64)
    side: Literal["left", "right"] = "left" if below else "right"
    for s in range(params.n_instruments):
        lo, hi = int(bounds[s]), int(bounds[s + 1])
        if lo == hi:
            continue
        floors = params.br_floor[s, 1 : int(params.br_count[s])]
        out[lo:hi] = np.searchsorted(floors, notional[lo:hi], side=side)
    return out


def maintenance_margin(params: RiskParams, bounds: I64, notional: F64) -> F64:
    """``N * mmr - cum`` in each position's bracket (0 for a zero notional)."""
    out = np.empty_like(notional)
    for s in range(params.n_instruments):
        lo, hi = int(bounds[s]), int(bounds[s + 1])
        if lo < hi:
            out[lo:hi] = slice_maintenance(params, s, notional[lo:hi])
    return out


def slice_maintenance(params: RiskParams, s: int, notional: F64) -> F64:
    """Maintenance margin of notionals that all belong to instrument ``s``."""
    floors = params.br_floor[s, 1 : int(params.br_count[s])]
    b = np.searchsorted(floors, notional, side="right")
    out: F64 = notional * params.br_mmr[s, b] - params.br_cum[s, b]
    return out


@dataclass(frozen=True, eq=False)
class BaseFigures:
    """Position and account figures of a snapshot at its own prices."""

    notional: F64  # per position
    upnl: F64
    mm: F64
    wallet: F64  # per account: haircut collateral value
    acc_upnl: F64
    acc_mm: F64
    acc_notional: F64
    n_cross: I64

    @property
    def equity(self) -> F64:
        out: F64 = self.wallet + self.acc_upnl
        return out

    @property
    def liquidatable(self) -> Bool:
        """The venue's rule ``MR >= 1`` (see :func:`liquidatable`)."""
        return liquidatable(self.acc_mm, self.equity, self.n_cross > 0)


def liquidatable(mm: F64, equity: F64, has_positions: Bool) -> Bool:
    """``MR = MM / E >= 1`` with open positions, compared as ``MM >= E``; equity at or
    below zero is an infinite ratio (DESIGN.md section 4), liquidatable whatever the
    maintenance margin, even none (a bracket at a zero rate)."""
    out: Bool = has_positions & ((equity <= 0.0) | (mm >= equity))
    return out


def base_figures(snap: BookSnapshot) -> BaseFigures:
    n = snap.n_accounts
    notional = np.abs(snap.qty) * snap.mark
    upnl = snap.qty * (snap.mark - snap.entry)
    mm = maintenance_margin(snap.params, snap.bounds, notional)
    acc = snap.acct
    return BaseFigures(
        notional=notional,
        upnl=upnl,
        mm=mm,
        wallet=snap.collateral_weights() @ snap.bal,
        acc_upnl=sums(acc, upnl, n),
        acc_mm=sums(acc, mm, n),
        acc_notional=sums(acc, notional, n),
        n_cross=np.bincount(acc, minlength=n).astype(np.int64),
    )
