"""The incremental margin state store.

Columnar numpy arrays for accounts and positions (see :mod:`monitor.book.layout`),
a per-symbol list of position slots (the CSR-like index a tick walks), a
per-asset list of collateral holders, and capacities that grow by doubling so
slots reach millions without per-update reallocation. Closed positions return
their slots to a free stack.

A tick touches only the positions on its symbol (and, for a collateral price,
the holders of that asset); a position or balance update re-evaluates its
account. The sums of uPnL and maintenance margin are kept by deltas and
periodically re-derived exactly by :meth:`MarginBook.resync`, which records
the largest correction it had to make.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final, TypeVar, cast

import numpy as np
import numpy.typing as npt

from monitor.book import kernels as K
from monitor.book.layout import (
    A_HEAD,
    A_MM,
    A_NCROSS,
    A_NISO,
    A_STATUS,
    A_UPNL,
    A_WB,
    M_HWM,
    M_NDIRTY,
    M_NFREE,
    MODE_CROSS,
    MODE_ISOLATED,
    N_AF,
    N_AI,
    N_META,
    N_PF,
    N_PI,
    OK,
    P_ACCT,
    P_BRACKET,
    P_ENTRY,
    P_ISO_MARGIN,
    P_MM,
    P_MODE,
    P_NEXT,
    P_QTY,
    P_STATUS,
    P_SUB,
    P_SYM,
    P_SYMIDX,
    P_UPNL,
)
from monitor.book.recompute import asset_prices, position_figures, wallet_balances
from monitor.book.segments import SegmentedLists
from monitor.events.decode import Rejection, RejectReason, ts_rejection
from monitor.events.schema import MAX_TS_MS, BalanceEvent, Event, PositionEvent, Tick
from monitor.instruments.model import RiskParams
from monitor.risk.levels import Thresholds, margin_ratios

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]

_MODES: Final = {"cross": MODE_CROSS, "isolated": MODE_ISOLATED}
_KIND: Final = {Tick: "tick", PositionEvent: "position", BalanceEvent: "balance"}


_A = TypeVar("_A", bound=npt.NDArray[Any])


def _grow_cols(a: _A, cap: int, fill: float) -> _A:
    out = np.full((a.shape[0], cap), fill, dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return cast(_A, out)


def _grow_vec(a: _A, cap: int, fill: float) -> _A:
    out = np.full(cap, fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return cast(_A, out)


class MarginBook:
    """Accounts, positions and collateral, evaluated incrementally."""

    def __init__(
        self,
        params: RiskParams,
        thresholds: Thresholds | None = None,
        *,
        accounts: int = 1024,
        positions: int = 4096,
    ) -> None:
        self.params = params
        self.thresholds = thresholds or Thresholds()
        self._thr = self.thresholds.as_array()
        n_assets = len(params.assets)
        n_sym = len(params.symbols)
        n_instr = params.n_instruments
        accounts = max(accounts, 16)
        positions = max(positions, 16)
        # accounts
        self.acc_f: F64 = np.zeros((N_AF, accounts))
        self.acc_i: I64 = np.zeros((N_AI, accounts), dtype=np.int64)
        self.acc_i[A_HEAD] = -1
        self.bal: F64 = np.zeros((n_assets, accounts))
        self.bal_ts: I64 = np.full((n_assets, accounts), -1, dtype=np.int64)
        self.dirty: I64 = np.zeros(accounts, dtype=np.int64)
        self.account_ids: list[str] = []
        self._slot: dict[str, int] = {}
        # positions
        self.pos_f: F64 = np.zeros((N_PF, positions))
        self.pos_i: I32 = np.zeros((N_PI, positions), dtype=np.int32)
        self.pos_i[P_ACCT] = -1
        self.pos_ts: I64 = np.zeros(positions, dtype=np.int64)
        self.free: I64 = np.zeros(positions, dtype=np.int64)
        self.meta: I64 = np.zeros(N_META, dtype=np.int64)
        # per symbol, the slots of its cross positions and of its isolated ones:
        # group ``mode * n_instruments + symbol`` of one segmented array
        self.lists = SegmentedLists(2 * n_instr)
        # collateral holders, for assets priced by ticks
        self.hold_lists: list[I64] = [np.zeros(16, dtype=np.int64) for _ in range(n_assets)]
        self.hold_len: I64 = np.zeros(n_assets, dtype=np.int64)
        self.hold_idx: I64 = np.full((n_assets, accounts), -1, dtype=np.int64)
        self._priced_assets = [
            [k for k in range(n_assets) if params.asset_price_sym[k] == s] for s in range(n_sym)
        ]
        # prices
        self.sym_price: F64 = np.full(n_sym, np.nan)
        self.sym_ts: I64 = np.full(n_sym, -1, dtype=np.int64)
        self.asset_price = asset_prices(params, self.sym_price)
        # labels, tombstones of closed positions (staleness), bookkeeping
        self.sub_labels: list[str] = [""]
        self._sub: dict[str, int] = {"": 0}
        self._closed_ts: dict[int, int] = {}
        self.max_correction = 0.0
        self.last_event_ts = -1

    # ------------------------------------------------------------ sizes
    @property
    def n_accounts(self) -> int:
        return len(self.account_ids)

    @property
    def n_positions(self) -> int:
        return int(self.meta[M_HWM] - self.meta[M_NFREE])

    @property
    def list_len(self) -> I64:
        """Open positions per ``(mode, instrument)``."""
        return self.lists.length.reshape(2, -1)

    @property
    def sym_len(self) -> I64:
        """Open positions (cross and isolated) per instrument."""
        out: I64 = self.list_len.sum(axis=0)
        return out

    def symbol_slots(self, s: int, mode: int = MODE_CROSS) -> I32:
        """Slots of the open positions of one instrument in one margin mode."""
        return self.lists.view(mode * self.params.n_instruments + s)

    @property
    def position_capacity(self) -> int:
        return int(self.pos_f.shape[1])

    def _ensure_accounts(self, n: int) -> None:
        cap = self.acc_f.shape[1]
        if n <= cap:
            return
        new = max(n, cap * 2)
        self.acc_f = _grow_cols(self.acc_f, new, 0.0)
        self.acc_i = _grow_cols(self.acc_i, new, 0)
        self.acc_i[A_HEAD, cap:] = -1
        self.bal = _grow_cols(self.bal, new, 0.0)
        self.bal_ts = _grow_cols(self.bal_ts, new, -1)
        self.hold_idx = _grow_cols(self.hold_idx, new, -1)
        self.dirty = _grow_vec(self.dirty, new, 0)

    def _ensure_positions(self, n: int) -> None:
        cap = self.pos_f.shape[1]
        if n <= cap:
            return
        new = max(n, cap * 2)
        self.pos_f = _grow_cols(self.pos_f, new, 0.0)
        self.pos_i = _grow_cols(self.pos_i, new, 0)
        self.pos_i[P_ACCT, cap:] = -1
        self.pos_ts = _grow_vec(self.pos_ts, new, 0)
        self.free = _grow_vec(self.free, new, 0)

    def reserve(self, accounts: int, positions: int) -> None:
        """Pre-size the arrays (a known book size avoids growth copies)."""
        self._ensure_accounts(accounts)
        self._ensure_positions(positions)

    # ------------------------------------------------------------ identities
    def slot_of(self, account: str) -> int | None:
        return self._slot.get(account)

    def account_slot(self, account: str) -> int:
        """The slot of an account, created on first sight."""
        a = self._slot.get(account)
        if a is None:
            a = len(self.account_ids)
            self._ensure_accounts(a + 1)
            self.account_ids.append(account)
            self._slot[account] = a
        return a

    def add_accounts(self, ids: Sequence[str]) -> I64:
        """Register many new accounts at once; returns their slots."""
        start = len(self.account_ids)
        self._ensure_accounts(start + len(ids))
        for k, acc in enumerate(ids):
            if acc in self._slot:
                raise ValueError(f"account {acc!r} is already in the book")
            self._slot[acc] = start + k
        self.account_ids.extend(ids)
        return np.arange(start, start + len(ids), dtype=np.int64)

    def sub_id(self, label: str) -> int:
        k = self._sub.get(label)
        if k is None:
            k = len(self.sub_labels)
            self.sub_labels.append(label)
            self._sub[label] = k
        return k

    # ------------------------------------------------------------ events
    def apply(self, ev: Event) -> Rejection | None:
        """Apply one validated event; returns a rejection if it is stale."""
        if isinstance(ev, Tick):
            return self.apply_tick(self.params.symbol_id[ev.symbol], ev.price, ev.ts)
        if isinstance(ev, PositionEvent):
            return self.apply_position(ev)
        return self.apply_balance(ev)

    def apply_tick(self, s: int, price: float, ts: int) -> Rejection | None:
        if not 0 <= ts <= MAX_TS_MS:
            return ts_rejection("tick", ts)
        if ts < self.sym_ts[s]:
            return Rejection(
                RejectReason.STALE,
                f"tick ts {ts} for {self.params.symbols[s]} is older than the last one "
                f"({self.sym_ts[s]})",
            )
        self.sym_price[s] = price
        self.sym_ts[s] = ts
        if ts > self.last_event_ts:
            self.last_event_ts = ts
        p = self.params
        if s < p.n_instruments:
            iso = self.lists.view(p.n_instruments + s)
            if iso.shape[0]:
                K.tick_isolated(
                    price,
                    iso,
                    iso.shape[0],
                    self.acc_i,
                    self.pos_f,
                    self.pos_i,
                    p.br_floor[s],
                    p.br_mmr[s],
                    p.br_cum[s],
                    int(p.br_count[s]),
                    self._thr,
                    self.dirty,
                    self.meta,
                )
            cross = self.lists.view(s)
            K.tick_instrument(
                price,
                cross,
                cross.shape[0],
                self.acc_f,
                self.acc_i,
                self.pos_f,
                self.pos_i,
                p.br_floor[s],
                p.br_mmr[s],
                p.br_cum[s],
                int(p.br_count[s]),
                self._thr,
                self.dirty,
                self.meta,
            )
        for k in self._priced_assets[s]:
            self.asset_price[k] = price
            K.tick_collateral(
                self.hold_lists[k],
                int(self.hold_len[k]),
                self.bal,
                self.asset_price,
                p.asset_haircut,
                self.acc_f,
                self.acc_i,
                self._thr,
                self.dirty,
                self.meta,
            )
        return None

    def apply_position(self, ev: PositionEvent) -> Rejection | None:
        if not 0 <= ev.ts <= MAX_TS_MS:
            return ts_rejection("position", ev.ts)
        p = self.params
        s = p.symbol_id[ev.symbol]
        a = self.account_slot(ev.account)
        key = a * len(p.symbols) + s
        closed = self._closed_ts.get(key)
        if closed is not None and ev.ts < closed:
            return self._stale_position(ev, closed)
        if self.meta[M_NFREE] == 0:
            self._ensure_positions(int(self.meta[M_HWM]) + 1)
        self.lists.ensure_room(s, 1)
        self.lists.ensure_room(p.n_instruments + s, 1)
        code = K.apply_position(
            a,
            s,
            ev.qty,
            ev.entry_price,
            _MODES[ev.margin_mode],
            ev.isolated_margin,
            self.sub_id(ev.sub_account),
            ev.ts,
            self.sym_price[s],
            self.acc_f,
            self.acc_i,
            self.pos_f,
            self.pos_i,
            self.pos_ts,
            self.lists.flat,
            self.lists.start,
            self.lists.length,
            p.n_instruments,
            self.free,
            p.br_floor[s],
            p.br_mmr[s],
            p.br_cum[s],
            int(p.br_count[s]),
            self._thr,
            self.dirty,
            self.meta,
        )
        if code != OK:
            q = K.find_position(a, s, self.acc_i, self.pos_i)
            return self._stale_position(ev, int(self.pos_ts[q]))
        if ev.qty == 0.0:
            self._closed_ts[key] = ev.ts
        elif closed is not None:
            del self._closed_ts[key]
        if ev.ts > self.last_event_ts:
            self.last_event_ts = ev.ts
        return None

    @staticmethod
    def _stale_position(ev: PositionEvent, held: int | None) -> Rejection:
        at = "" if held is None else f" ({held})"
        return Rejection(
            RejectReason.STALE,
            f"position ts {ev.ts} for account {ev.account} {ev.symbol} is older than the "
            f"state held{at}",
        )

    def apply_balance(self, ev: BalanceEvent) -> Rejection | None:
        if not 0 <= ev.ts <= MAX_TS_MS:
            return ts_rejection("balance", ev.ts)
        p = self.params
        k = p.asset_id[ev.asset]
        a = self.account_slot(ev.account)
        code = K.apply_balance(
            a,
            k,
            ev.amount,
            ev.ts,
            self.bal,
            self.bal_ts,
            self.asset_price,
            p.asset_haircut,
            self.acc_f,
            self.acc_i,
            self._thr,
            self.dirty,
            self.meta,
        )
        if code != OK:
            return _stale_balance(ev, int(self.bal_ts[k, a]))
        if p.asset_price_sym[k] >= 0:
            self._update_holder(k, a, ev.amount != 0.0)
        if ev.ts > self.last_event_ts:
            self.last_event_ts = ev.ts
        return None

    def _update_holder(self, k: int, a: int, holds: bool) -> None:
        idx = int(self.hold_idx[k, a])
        if holds and idx < 0:
            n = int(self.hold_len[k])
            lst = self.hold_lists[k]
            if n >= lst.shape[0]:
                lst = self.hold_lists[k] = _grow_vec(lst, lst.shape[0] * 2, 0)
            lst[n] = a
            self.hold_idx[k, a] = n
            self.hold_len[k] = n + 1
        elif not holds and idx >= 0:
            lst = self.hold_lists[k]
            last = int(self.hold_len[k]) - 1
            moved = int(lst[last])
            lst[idx] = moved
            self.hold_idx[k, moved] = idx
            self.hold_idx[k, a] = -1
            self.hold_len[k] = last

    def apply_batch(
        self, events: Sequence[Event], *, conflate: bool = True
    ) -> list[tuple[int, Rejection]]:
        """Apply a batch in order; with ``conflate`` the ticks of one symbol collapse
        to the latest (account events still apply in order, so the end state is the
        same). Returns ``(index in batch, rejection)`` for stale events."""
        rejected: list[tuple[int, Rejection]] = []
        if not conflate:
            for i, ev in enumerate(events):
                r = self.apply(ev)
                if r is not None:
                    rejected.append((i, r))
            return rejected
        p = self.params
        sid = p.symbol_id
        aid = p.asset_id
        n_sym = len(p.symbols)
        slot = self._slot
        closed_ts = self._closed_ts
        latest: dict[int, tuple[float, int]] = {}
        b = _AccountBatch()
        # one tight loop resolves account events to columns (bound appends: this
        # loop is the per-event Python cost of the account-event path)
        index, kind, acct, key, value = b.index, b.kind, b.acct, b.key, b.value
        entry, mode, iso, sub, tss, closed = b.entry, b.mode, b.iso, b.sub, b.ts, b.closed
        for i, ev in enumerate(events):
            t = ev.ts
            if t < 0 or t > MAX_TS_MS:  # only events built in code: decoding bounds ts
                rejected.append((i, ts_rejection(_KIND[type(ev)], t)))
                continue
            if type(ev) is Tick:
                s = sid[ev.symbol]
                prev = latest.get(s)
                held = prev[1] if prev is not None else int(self.sym_ts[s])
                if t < held:
                    rejected.append((i, _stale_tick(ev, held)))
                else:
                    latest[s] = (ev.price, t)
                continue
            a = slot.get(ev.account)  # type: ignore[union-attr]
            if a is None:
                a = self.account_slot(ev.account)  # type: ignore[union-attr]
            if type(ev) is PositionEvent:
                s = sid[ev.symbol]
                tk = a * n_sym + s
                c = closed.get(tk, closed_ts.get(tk))
                if c is not None and ev.ts < c:
                    rejected.append((i, self._stale_position(ev, c)))
                    continue
                if ev.qty == 0.0:
                    closed[tk] = ev.ts
                kind.append(K.KIND_POSITION)
                key.append(s)
                value.append(ev.qty)
                entry.append(ev.entry_price)
                mode.append(_MODES[ev.margin_mode])
                iso.append(ev.isolated_margin)
                sub.append(self.sub_id(ev.sub_account) if ev.sub_account else 0)
            else:
                assert isinstance(ev, BalanceEvent)
                kind.append(K.KIND_BALANCE)
                key.append(aid[ev.asset])
                value.append(ev.amount)
                entry.append(0.0)
                mode.append(0)
                iso.append(0.0)
                sub.append(0)
            index.append(i)
            acct.append(a)
            tss.append(ev.ts)
        if index:
            rejected.extend(self._apply_staged(b, events))
            rejected.sort(key=lambda ir: ir[0])
        for s, (price, ts) in latest.items():
            self.apply_tick(s, price, ts)
        return rejected

    def _apply_staged(
        self, batch: _AccountBatch, events: Sequence[Event]
    ) -> list[tuple[int, Rejection]]:
        """Run the batch kernel over staged account events (staleness against a position
        closed before, or earlier in this batch, was decided while staging: a close the
        kernel then finds stale only makes that check looser, never wrong, because such
        a close was older than the position it failed to close)."""
        p = self.params
        ni = p.n_instruments
        kind = np.array(batch.kind, dtype=np.int64)
        key = np.array(batch.key, dtype=np.int64)
        ts = np.array(batch.ts, dtype=np.int64)
        is_pos = kind == K.KIND_POSITION
        n_pos = int(np.count_nonzero(is_pos))
        self._ensure_positions(int(self.meta[M_HWM]) + n_pos)
        if n_pos:
            per_sym = np.bincount(key[is_pos], minlength=ni)
            for s in np.flatnonzero(per_sym):
                self.lists.ensure_room(int(s), int(per_sym[s]))
                self.lists.ensure_room(ni + int(s), int(per_sym[s]))
        codes = np.zeros(kind.shape[0], dtype=np.int64)
        value = np.array(batch.value, dtype=np.float64)
        K.apply_account_events(
            kind,
            np.array(batch.acct, dtype=np.int64),
            key,
            value,
            np.array(batch.entry, dtype=np.float64),
            np.array(batch.mode, dtype=np.int64),
            np.array(batch.iso, dtype=np.float64),
            np.array(batch.sub, dtype=np.int64),
            ts,
            codes,
            self.sym_price,
            self.acc_f,
            self.acc_i,
            self.pos_f,
            self.pos_i,
            self.pos_ts,
            self.lists.flat,
            self.lists.start,
            self.lists.length,
            ni,
            self.free,
            p.br_floor,
            p.br_mmr,
            p.br_cum,
            p.br_count,
            self.bal,
            self.bal_ts,
            self.asset_price,
            p.asset_haircut,
            self._thr,
            self.dirty,
            self.meta,
        )
        ok = codes == OK
        if ok.any():
            self.last_event_ts = max(self.last_event_ts, int(ts[ok].max()))
        rejected: list[tuple[int, Rejection]] = []
        for j in np.flatnonzero(~ok):
            ev = events[batch.index[j]]
            if isinstance(ev, PositionEvent):
                rejected.append((batch.index[j], self._stale_position(ev, None)))
            else:
                assert isinstance(ev, BalanceEvent)
                rejected.append((batch.index[j], _stale_balance(ev, None)))
        # tombstones of closed positions: only closes, and opens of a closed key
        closed_ts = self._closed_ts
        if closed_ts or batch.closed:
            n_sym = len(p.symbols)
            for j in np.flatnonzero(ok & is_pos):
                tk = batch.acct[j] * n_sym + batch.key[j]
                if batch.value[j] == 0.0:
                    closed_ts[tk] = batch.ts[j]
                elif tk in closed_ts:
                    del closed_ts[tk]
        # collateral holder lists for assets priced by ticks
        priced = ok & ~is_pos & (p.asset_price_sym[np.where(is_pos, 0, key)] >= 0)
        for j in np.flatnonzero(priced):
            self._update_holder(batch.key[j], batch.acct[j], batch.value[j] != 0.0)
        return rejected

    # ------------------------------------------------------------ reading
    @property
    def wallet_balance(self) -> F64:
        return self.acc_f[A_WB, : self.n_accounts]

    @property
    def unrealized_pnl(self) -> F64:
        return self.acc_f[A_UPNL, : self.n_accounts]

    @property
    def maintenance_margin(self) -> F64:
        return self.acc_f[A_MM, : self.n_accounts]

    @property
    def equity(self) -> F64:
        n = self.n_accounts
        out: F64 = self.acc_f[A_WB, :n] + self.acc_f[A_UPNL, :n]
        return out

    @property
    def margin_ratio(self) -> F64:
        """``MM / E`` per account: 0 without cross positions, inf when E <= 0."""
        return margin_ratios(self.maintenance_margin, self.equity, self.cross_positions > 0)

    @property
    def status(self) -> I64:
        return self.acc_i[A_STATUS, : self.n_accounts]

    @property
    def cross_positions(self) -> I64:
        return self.acc_i[A_NCROSS, : self.n_accounts]

    @property
    def isolated_positions(self) -> I64:
        return self.acc_i[A_NISO, : self.n_accounts]

    def positions_of(self, a: int) -> list[int]:
        """Slots of an account's open positions (cross and isolated)."""
        out: list[int] = []
        p = int(self.acc_i[A_HEAD, a])
        while p >= 0:
            out.append(p)
            p = int(self.pos_i[P_NEXT, p])
        return out

    def mark_of(self, s: int, entry: float) -> float:
        m = float(self.sym_price[s])
        return entry if m != m else m

    def alive_positions(self) -> I64:
        hwm = int(self.meta[M_HWM])
        out: I64 = np.flatnonzero(self.pos_i[P_ACCT, :hwm] >= 0).astype(np.int64)
        return out

    def isolated_at_risk(self) -> I64:
        """Accounts with an isolated position at or above the first threshold."""
        ni = self.params.n_instruments
        slots = [self.lists.view(ni + s) for s in range(ni) if self.lists.length[ni + s]]
        if not slots:
            return np.zeros(0, dtype=np.int64)
        p = np.concatenate(slots)
        out: I64 = np.unique(self.pos_i[P_ACCT, p[self.pos_i[P_STATUS, p] > 0]]).astype(np.int64)
        return out

    def drain_dirty(self) -> I64:
        """Accounts whose level (cross part or an isolated position) changed, or that
        had an account event, since the last drain; clears the list."""
        n = int(self.meta[M_NDIRTY])
        out = self.dirty[:n].copy()
        K.reset_dirty(self.dirty, n, self.acc_i)
        self.meta[M_NDIRTY] = 0
        return out

    # ------------------------------------------------------------ exactness
    def recompute(self) -> tuple[F64, F64, F64]:
        """Wallet, uPnL and maintenance sums of every account from scratch."""
        n = self.n_accounts
        alive = self.alive_positions()
        pi = self.pos_i
        fig = position_figures(
            self.params,
            pi[P_SYM, alive],
            self.pos_f[P_QTY, alive],
            self.pos_f[P_ENTRY, alive],
            self.sym_price,
        )
        cross = pi[P_MODE, alive] == MODE_CROSS
        acct = pi[P_ACCT, alive][cross]
        upnl = np.bincount(acct, weights=fig.upnl[cross], minlength=n)[:n].astype(np.float64)
        mm = np.bincount(acct, weights=fig.mm[cross], minlength=n)[:n].astype(np.float64)
        wb = wallet_balances(self.params, self.bal[:, :n], self.sym_price)
        return wb, upnl, mm

    def resync(self, *, record: bool = True, mark_dirty: bool = True) -> float:
        """Re-derive every figure exactly; returns (and records the largest) correction.

        Accounts whose level the exact figures change are marked dirty (a transition
        the alert engine must see), except after a bulk load (``mark_dirty=False``),
        where every level is new and :meth:`Engine.go_live` evaluates them."""
        n = self.n_accounts
        alive = self.alive_positions()
        fig = position_figures(
            self.params,
            self.pos_i[P_SYM, alive],
            self.pos_f[P_QTY, alive],
            self.pos_f[P_ENTRY, alive],
            self.sym_price,
        )
        self.pos_f[P_UPNL, alive] = fig.upnl
        self.pos_f[P_MM, alive] = fig.mm
        self.pos_i[P_BRACKET, alive] = fig.bracket
        iso = alive[self.pos_i[P_MODE, alive] == MODE_ISOLATED]
        changed: list[I64] = []  # accounts whose level the exact figures changed
        if iso.size:
            eq = self.pos_f[P_ISO_MARGIN, iso] + self.pos_f[P_UPNL, iso]
            has = np.ones(iso.shape[0], dtype=bool)
            lvl = _levels(self.pos_f[P_MM, iso], eq, has, self._thr)
            moved = lvl != self.pos_i[P_STATUS, iso]
            changed.append(self.pos_i[P_ACCT, iso[moved]].astype(np.int64))
            self.pos_i[P_STATUS, iso] = lvl
        wb, upnl, mm = self.recompute()
        corr = 0.0
        if n:
            corr = float(
                max(
                    np.max(np.abs(self.acc_f[A_WB, :n] - wb)),
                    np.max(np.abs(self.acc_f[A_UPNL, :n] - upnl)),
                    np.max(np.abs(self.acc_f[A_MM, :n] - mm)),
                )
            )
        self.acc_f[A_WB, :n] = wb
        self.acc_f[A_UPNL, :n] = upnl
        self.acc_f[A_MM, :n] = mm
        has = self.acc_i[A_NCROSS, :n] > 0
        lvl = _levels(mm, wb + upnl, has, self._thr)
        changed.append(np.flatnonzero(lvl != self.acc_i[A_STATUS, :n]).astype(np.int64))
        self.acc_i[A_STATUS, :n] = lvl
        # a level the correction changed is a transition the alert engine must see
        if mark_dirty:
            K.mark_dirty_many(np.unique(np.concatenate(changed)), self.acc_i, self.dirty, self.meta)
        if record:
            self.max_correction = max(self.max_correction, corr)
        return corr

    # ------------------------------------------------------------ bulk
    def load_positions(
        self,
        acct: npt.ArrayLike,
        sym: npt.ArrayLike,
        qty: npt.ArrayLike,
        entry: npt.ArrayLike,
        *,
        mode: npt.ArrayLike | None = None,
        iso_margin: npt.ArrayLike | None = None,
        sub: npt.ArrayLike | None = None,
        ts: npt.ArrayLike | None = None,
    ) -> None:
        """Install many positions at once into a book that has none (build, restore).

        Slots are laid out by symbol, then account, so the positions a tick walks
        are contiguous in memory. Account figures are then derived exactly."""
        if self.n_positions:
            raise ValueError("load_positions needs a book without positions")
        a = np.asarray(acct, dtype=np.int64)
        n = a.shape[0]
        s = np.asarray(sym, dtype=np.int64)
        q = np.asarray(qty, dtype=np.float64)
        e = np.asarray(entry, dtype=np.float64)
        md = np.zeros(n, np.int64) if mode is None else np.asarray(mode, dtype=np.int64)
        im = np.zeros(n) if iso_margin is None else np.asarray(iso_margin, dtype=np.float64)
        sb = np.zeros(n, np.int64) if sub is None else np.asarray(sub, dtype=np.int64)
        t = np.zeros(n, np.int64) if ts is None else np.asarray(ts, dtype=np.int64)
        keep = q != 0.0
        if not keep.all():
            a, s, md, sb, t = a[keep], s[keep], md[keep], sb[keep], t[keep]
            q, e, im = q[keep], e[keep], im[keep]
            n = a.shape[0]
        if n and (a.max() >= self.n_accounts or a.min() < 0):
            raise ValueError("load_positions: unknown account slot")
        order = np.lexsort((a, md, s))
        a, s, md, sb, t = a[order], s[order], md[order], sb[order], t[order]
        q, e, im = q[order], e[order], im[order]
        pairs = s * (self.n_accounts + 1) + a
        if n > 1 and np.any(pairs[1:] == pairs[:-1]):
            raise ValueError("load_positions: an (account, symbol) pair appears twice")
        self._ensure_positions(n)
        pf, pi = self.pos_f, self.pos_i
        pf[:, :n] = 0.0
        pi[:, :n] = 0
        pf[P_QTY, :n] = q
        pf[P_ENTRY, :n] = e
        pf[P_ISO_MARGIN, :n] = im
        pi[P_ACCT, :n] = a
        pi[P_SYM, :n] = s
        pi[P_MODE, :n] = md
        pi[P_SUB, :n] = sb
        self.pos_ts[:n] = t
        # symbol lists: contiguous runs of (symbol, mode)
        ni = self.params.n_instruments
        group = s * 2 + md
        counts = np.bincount(group, minlength=2 * ni)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        self.lists.assign(
            [
                np.arange(starts[2 * k + m], starts[2 * k + m] + counts[2 * k + m], dtype=np.int32)
                for m in (MODE_CROSS, MODE_ISOLATED)
                for k in range(ni)
            ]
        )
        pi[P_SYMIDX, :n] = np.arange(n) - starts[group]
        # account lists: chain each account's slots
        by_acct = np.argsort(a, kind="stable")
        nxt = np.full(n, -1, dtype=np.int64)
        same = a[by_acct[1:]] == a[by_acct[:-1]]
        nxt[by_acct[:-1][same]] = by_acct[1:][same]
        pi[P_NEXT, :n] = nxt
        first = np.ones(n, dtype=bool)
        first[1:] = ~same
        heads = by_acct[first]
        self.acc_i[A_HEAD, : self.n_accounts] = -1
        self.acc_i[A_HEAD, a[heads]] = heads
        cross = md == MODE_CROSS
        na = self.n_accounts
        self.acc_i[A_NCROSS, :na] = np.bincount(a[cross], minlength=na)[:na]
        self.acc_i[A_NISO, :na] = np.bincount(a[~cross], minlength=na)[:na]
        self.meta[M_HWM] = n
        self.meta[M_NFREE] = 0
        self.resync(record=False, mark_dirty=False)

    def load_balances(
        self,
        acct: npt.ArrayLike,
        asset: npt.ArrayLike,
        amount: npt.ArrayLike,
        ts: npt.ArrayLike | None = None,
    ) -> None:
        """Set many balances at once (build, restore); figures derived exactly after."""
        a = np.asarray(acct, dtype=np.int64)
        k = np.asarray(asset, dtype=np.int64)
        v = np.asarray(amount, dtype=np.float64)
        self.bal[k, a] = v
        self.bal_ts[k, a] = 0 if ts is None else np.asarray(ts, dtype=np.int64)
        for kk in np.unique(k):
            if self.params.asset_price_sym[kk] < 0:
                continue
            holders = np.flatnonzero(self.bal[kk, : self.n_accounts] != 0.0)
            lst = np.zeros(max(16, 2 * holders.size), dtype=np.int64)
            lst[: holders.size] = holders
            self.hold_lists[kk] = lst
            self.hold_len[kk] = holders.size
            self.hold_idx[kk, :] = -1
            self.hold_idx[kk, holders] = np.arange(holders.size)
        self.resync(record=False, mark_dirty=False)

    def compact(self) -> None:
        """Re-lay positions out by symbol and account (after churn has scattered them)."""
        alive = self.alive_positions()
        pf, pi = self.pos_f, self.pos_i
        cols = (
            pi[P_ACCT, alive].copy(),
            pi[P_SYM, alive].copy(),
            pf[P_QTY, alive].copy(),
            pf[P_ENTRY, alive].copy(),
            pi[P_MODE, alive].copy(),
            pf[P_ISO_MARGIN, alive].copy(),
            pi[P_SUB, alive].copy(),
            self.pos_ts[alive].copy(),
        )
        self.pos_i[P_ACCT] = -1
        self.meta[M_HWM] = 0
        self.meta[M_NFREE] = 0
        self.load_positions(
            cols[0],
            cols[1],
            cols[2],
            cols[3],
            mode=cols[4],
            iso_margin=cols[5],
            sub=cols[6],
            ts=cols[7],
        )

    def brackets_of(self, slots: Iterable[int]) -> list[int]:
        return [int(self.pos_i[P_BRACKET, p]) for p in slots]


class _AccountBatch:
    """Account events of one batch, as columns for :func:`kernels.apply_account_events`."""

    __slots__ = (
        "acct",
        "closed",
        "entry",
        "index",
        "iso",
        "key",
        "kind",
        "mode",
        "sub",
        "ts",
        "value",
    )

    def __init__(self) -> None:
        self.index: list[int] = []
        self.kind: list[int] = []
        self.acct: list[int] = []
        self.key: list[int] = []
        self.value: list[float] = []
        self.entry: list[float] = []
        self.mode: list[int] = []
        self.iso: list[float] = []
        self.sub: list[int] = []
        self.ts: list[int] = []
        self.closed: dict[int, int] = {}

    def add(
        self,
        i: int,
        kind: int,
        acct: int,
        key: int,
        value: float,
        entry: float,
        mode: int,
        iso: float,
        sub: int,
        ts: int,
    ) -> None:
        self.index.append(i)
        self.kind.append(kind)
        self.acct.append(acct)
        self.key.append(key)
        self.value.append(value)
        self.entry.append(entry)
        self.mode.append(mode)
        self.iso.append(iso)
        self.sub.append(sub)
        self.ts.append(ts)


def _stale_tick(ev: Tick, held: int) -> Rejection:
    return Rejection(
        RejectReason.STALE, f"tick ts {ev.ts} for {ev.symbol} is older than the last one ({held})"
    )


def _stale_balance(ev: BalanceEvent, held: int | None) -> Rejection:
    at = "" if held is None else f" ({held})"
    return Rejection(
        RejectReason.STALE,
        f"balance ts {ev.ts} for account {ev.account} {ev.asset} is older than the state held{at}",
    )


def _levels(mm: F64, eq: F64, has: npt.NDArray[np.bool_], thr: F64) -> I64:
    mr = margin_ratios(mm, eq, has)
    out: I64 = (mr[:, None] >= thr[None, :]).sum(axis=1).astype(np.int64)
    return out


__all__ = ["MODE_CROSS", "MODE_ISOLATED", "MarginBook"]
