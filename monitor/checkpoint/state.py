"""A book as plain arrays (what a snapshot holds), and back.

Positions are captured alive only and restored with
:meth:`MarginBook.load_positions`, balances with
:meth:`MarginBook.load_balances` (those set, including zero amounts, so the
staleness of later updates is still judged against their time), accounts with
:meth:`MarginBook.add_accounts`. Symbols and assets are stored by name and
checked on restore: a snapshot taken with other instruments is refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

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
_NONE = np.zeros(0, dtype=np.int64)


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
    # JSON-able state kept by the driver beside the book (e.g. the alert engine's).
    meta: dict[str, Any] = field(default_factory=dict)

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
    meta: Mapping[str, Any] | None = None,
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
        meta=dict(meta or {}),
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
    return select_accounts(state, np.flatnonzero(keep))


def select_accounts(state: BookState, slots: npt.ArrayLike) -> BookState:
    """The same state with only the accounts at ``slots`` (in that order, renumbered
    0..len-1); prices, offsets and meta are kept as they are."""
    sel = np.asarray(slots, dtype=np.int64)
    n = state.n_accounts
    new = np.full(n, -1, dtype=np.int64)
    new[sel] = np.arange(sel.shape[0], dtype=np.int64)
    nsym = len(state.symbols)
    pk = np.flatnonzero(new[state.pos_acct] >= 0) if state.n_positions else _NONE
    bk = np.flatnonzero(new[state.bal_acct] >= 0) if state.bal_acct.size else _NONE
    ca, cs = np.divmod(state.closed_key, nsym)
    ck = np.flatnonzero(new[ca] >= 0) if ca.size else _NONE
    ids = np.asarray(state.account_ids, dtype=object)
    return replace(
        state,
        account_ids=ids[sel].tolist() if sel.size else [],
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
        closed_key=new[ca[ck]] * nsym + cs[ck],
        closed_ts=state.closed_ts[ck],
        offsets=dict(state.offsets),
        account_extras={k: v[sel] for k, v in state.account_extras.items()},
        meta=dict(state.meta),
    )


def split_accounts(state: BookState, key: npt.ArrayLike) -> dict[int, BookState]:
    """``state`` cut into one state per value of ``key`` (one int per account, e.g.
    the partition each account came from); accounts keep their relative order."""
    k = np.asarray(key, dtype=np.int64)
    if k.shape[0] != state.n_accounts:
        raise ValueError(f"key has {k.shape[0]} rows for {state.n_accounts} accounts")
    if k.size == 0:
        return {}
    order = np.argsort(k, kind="stable")
    values, starts = np.unique(k[order], return_index=True)
    ends = [*starts[1:].tolist(), order.shape[0]]
    return {
        int(v): select_accounts(state, order[s:e])
        for v, s, e in zip(values.tolist(), starts.tolist(), ends, strict=True)
    }


def concat_states(base: BookState, others: Sequence[BookState]) -> BookState:
    """``base`` with the accounts of ``others`` appended (slots renumbered, sub-account
    labels merged). Prices, event time and correction stay ``base``'s: the driver's
    own price feed is the authority on marks. Offsets and meta are merged; account
    extras must be present in every state.

    An account id held by two states is an error (accounts are partitioned by key, so
    two partitions never hold the same account unless a producer mis-keyed it)."""
    if not others:
        return base
    for o in others:
        if o.symbols != base.symbols or o.assets != base.assets:
            raise StateError("cannot merge snapshots taken with different instruments")
        if set(o.account_extras) != set(base.account_extras):
            raise ValueError("every merged state needs the same account extras")
    labels = list(base.sub_labels)
    index = {lab: i for i, lab in enumerate(labels)}
    parts = [base, *others]
    shifts, subs = [], []
    total = 0
    for st in parts:
        shifts.append(total)
        total += st.n_accounts
        remap = np.empty(len(st.sub_labels), dtype=np.int64)
        for i, lab in enumerate(st.sub_labels):
            if lab not in index:
                index[lab] = len(labels)
                labels.append(lab)
            remap[i] = index[lab]
        subs.append(remap)
    ids = [a for st in parts for a in st.account_ids]
    if len(set(ids)) != len(ids):
        dup = sorted(a for a, c in Counter(ids).items() if c > 1)[:5]
        raise StateError(f"accounts held by two partitions' snapshots: {dup}")
    nsym = len(base.symbols)

    def cat(name: str, shift: bool = False) -> npt.NDArray[Any]:
        arrays = [
            getattr(st, name) + (d if shift else 0) for st, d in zip(parts, shifts, strict=True)
        ]
        return np.concatenate(arrays)

    offsets: Offsets = {}
    meta: dict[str, Any] = {}
    for st in parts:
        offsets.update(st.offsets)
        meta.update(st.meta)
    return replace(
        base,
        account_ids=ids,
        sub_labels=labels,
        pos_acct=cat("pos_acct", shift=True),
        pos_sym=cat("pos_sym"),
        pos_qty=cat("pos_qty"),
        pos_entry=cat("pos_entry"),
        pos_mode=cat("pos_mode"),
        pos_iso=cat("pos_iso"),
        pos_sub=np.concatenate([r[st.pos_sub] for st, r in zip(parts, subs, strict=True)]),
        pos_ts=cat("pos_ts"),
        bal_acct=cat("bal_acct", shift=True),
        bal_asset=cat("bal_asset"),
        bal_amount=cat("bal_amount"),
        bal_ts=cat("bal_ts"),
        closed_key=np.concatenate(
            [st.closed_key + d * nsym for st, d in zip(parts, shifts, strict=True)]
        ),
        closed_ts=cat("closed_ts"),
        offsets=offsets,
        account_extras={
            k: np.concatenate([st.account_extras[k] for st in parts]) for k in base.account_extras
        },
        meta=meta,
    )
