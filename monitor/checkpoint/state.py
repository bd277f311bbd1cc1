"""A book as plain arrays (what a snapshot holds), and back.

Positions are captured alive only and restored with
:meth:`MarginBook.load_positions`, balances with
:meth:`MarginBook.load_balances` (those set, including zero amounts, so the
staleness of later updates is still judged against their time), accounts with
:meth:`MarginBook.add_accounts`. Symbols and assets are stored by name and
checked on restore: a snapshot taken with other instruments is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from monitor.book.layout import (
    P_ACCT,
    P_ENTRY,
    P_ISO_MARGIN,
    P_MODE,
    P_QTY,
    P_SUB,
    P_SYM,
)
from monitor.book.recompute import asset_prices
from monitor.book.store import MarginBook
from monitor.errors import StateError
from monitor.instruments.model import RiskParams
from monitor.risk.levels import Thresholds

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Offsets = dict[tuple[str, int], int]


def closed_positions(book: MarginBook) -> dict[int, int]:
    """The book's tombstones: ``account_slot * n_symbols + symbol`` -> close time.

    (The book keeps them privately; a snapshot must carry them so that a stale
    re-open of a closed position is still rejected after a restart.)
    """
    return book._closed_ts


@dataclass(slots=True)
class BookState:
    """Everything needed to rebuild a book, plus the offsets it is consistent with."""

    symbols: list[str]
    assets: list[str]
    account_ids: list[str]
    sub_labels: list[str]
    pos_acct: I64
    pos_sym: I64
    pos_qty: F64
    pos_entry: F64
    pos_mode: I64
    pos_iso: F64
    pos_sub: I64
    pos_ts: I64
    bal_acct: I64
    bal_asset: I64
    bal_amount: F64
    bal_ts: I64
    sym_price: F64
    sym_ts: I64
    closed_key: I64
    closed_ts: I64
    last_event_ts: int = -1
    max_correction: float = 0.0
    offsets: Offsets = field(default_factory=dict)
    created_ms: int = 0
    # Per-account columns kept by the driver (e.g. the partition each account came from).
    account_extras: dict[str, I64] = field(default_factory=dict)

    @property
    def n_accounts(self) -> int:
        return len(self.account_ids)

    @property
    def n_positions(self) -> int:
        return int(self.pos_acct.shape[0])


def capture(
    book: MarginBook,
    offsets: Mapping[tuple[str, int], int] | None = None,
    *,
    created_ms: int = 0,
    account_extras: Mapping[str, npt.ArrayLike] | None = None,
) -> BookState:
    """Copy the book's state (alive positions, set balances, prices, tombstones)."""
    p = book.params
    n = book.n_accounts
    alive = book.alive_positions()
    pi, pf = book.pos_i, book.pos_f
    set_k, set_a = np.nonzero(book.bal_ts[:, :n] >= 0)
    closed = closed_positions(book)
    extras = {
        k: np.asarray(v, dtype=np.int64)[:n].copy() for k, v in (account_extras or {}).items()
    }
    for k, v in extras.items():
        if v.shape[0] != n:
            raise ValueError(f"account extra {k!r} has {v.shape[0]} rows for {n} accounts")
    return BookState(
        symbols=list(p.symbols),
        assets=[a.name for a in p.assets],
        account_ids=list(book.account_ids),
        sub_labels=list(book.sub_labels),
        pos_acct=pi[P_ACCT, alive].astype(np.int64),
        pos_sym=pi[P_SYM, alive].astype(np.int64),
        pos_qty=pf[P_QTY, alive].copy(),
        pos_entry=pf[P_ENTRY, alive].copy(),
        pos_mode=pi[P_MODE, alive].astype(np.int64),
        pos_iso=pf[P_ISO_MARGIN, alive].copy(),
        pos_sub=pi[P_SUB, alive].astype(np.int64),
        pos_ts=book.pos_ts[alive].astype(np.int64),
        bal_acct=set_a.astype(np.int64),
        bal_asset=set_k.astype(np.int64),
        bal_amount=book.bal[set_k, set_a].copy(),
        bal_ts=book.bal_ts[set_k, set_a].astype(np.int64),
        sym_price=book.sym_price.copy(),
        sym_ts=book.sym_ts.astype(np.int64),
        closed_key=np.fromiter(closed.keys(), dtype=np.int64, count=len(closed)),
        closed_ts=np.fromiter(closed.values(), dtype=np.int64, count=len(closed)),
        last_event_ts=int(book.last_event_ts),
        max_correction=float(book.max_correction),
        offsets=dict(offsets or {}),
        created_ms=created_ms,
        account_extras=extras,
    )


def check_compatible(state: BookState, params: RiskParams) -> None:
    """Refuse a state taken with other instruments or assets (ids would mean other things)."""
    assets = [a.name for a in params.assets]
    if state.symbols != list(params.symbols) or state.assets != assets:
        raise StateError(
            "the snapshot was taken with other instruments or assets "
            f"(symbols {state.symbols[:5]}..., assets {state.assets}); "
            "it cannot be restored with the current instruments file"
        )


def restore(
    state: BookState,
    params: RiskParams,
    thresholds: Thresholds | None = None,
) -> MarginBook:
    """A new book equal to the one ``state`` was captured from."""
    check_compatible(state, params)
    n = state.n_accounts
    book = MarginBook(params, thresholds, accounts=max(16, n), positions=max(16, state.n_positions))
    book.add_accounts(state.account_ids)
    for label in state.sub_labels[1:]:
        book.sub_id(label)
    book.sym_price[:] = state.sym_price
    book.sym_ts[:] = state.sym_ts
    book.asset_price[:] = asset_prices(params, book.sym_price)
    book.load_balances(state.bal_acct, state.bal_asset, state.bal_amount, state.bal_ts)
    book.load_positions(
        state.pos_acct,
        state.pos_sym,
        state.pos_qty,
        state.pos_entry,
        mode=state.pos_mode,
        iso_margin=state.pos_iso,
        sub=state.pos_sub,
        ts=state.pos_ts,
    )
    closed = closed_positions(book)
    closed.clear()
    closed.update(zip(state.closed_key.tolist(), state.closed_ts.tolist(), strict=True))
    book.last_event_ts = state.last_event_ts
    book.max_correction = state.max_correction
    return book


def keep_accounts(state: BookState, keep: npt.NDArray[np.bool_]) -> BookState:
    """The same state with only the accounts where ``keep`` is true (slots renumbered)."""
    n = state.n_accounts
    if keep.shape[0] != n:
        raise ValueError(f"keep has {keep.shape[0]} rows for {n} accounts")
    new = np.cumsum(keep) - 1
    nsym = len(state.symbols)
    pk = keep[state.pos_acct] if state.n_positions else np.zeros(0, dtype=bool)
    bk = keep[state.bal_acct] if state.bal_acct.size else np.zeros(0, dtype=bool)
    ca, cs = np.divmod(state.closed_key, nsym)
    ck = keep[ca] if ca.size else np.zeros(0, dtype=bool)
    return BookState(
        symbols=state.symbols,
        assets=state.assets,
        account_ids=[a for a, k in zip(state.account_ids, keep.tolist(), strict=True) if k],
        sub_labels=state.sub_labels,
        pos_acct=new[state.pos_acct[pk]],
        pos_sym=state.pos_sym[pk],
        pos_qty=state.pos_qty[pk],
        pos_entry=state.pos_entry[pk],
        pos_mode=state.pos_mode[pk],
        pos_iso=state.pos_iso[pk],
        pos_sub=state.pos_sub[pk],
        pos_ts=state.pos_ts[pk],
        bal_acct=new[state.bal_acct[bk]],
        bal_asset=state.bal_asset[bk],
        bal_amount=state.bal_amount[bk],
        bal_ts=state.bal_ts[bk],
        sym_price=state.sym_price,
        sym_ts=state.sym_ts,
        closed_key=new[ca[ck]] * nsym + cs[ck],
        closed_ts=state.closed_ts[ck],
        last_event_ts=state.last_event_ts,
        max_correction=state.max_correction,
        offsets=dict(state.offsets),
        created_ms=state.created_ms,
        account_extras={k: v[keep] for k, v in state.account_extras.items()},
    )
