"""The incremental margin state store.

Columnar numpy arrays for accounts and positions (see :mod:`monitor.book.layout`),
positions grouped by (margin mode, instrument) in contiguous runs of slots, a
per-asset list of collateral holders, and capacities that grow geometrically so
slots reach millions without per-update reallocation.

Position groups: group ``g = mode * n_instruments + symbol`` owns the slots
``gstart[g] .. gstart[g] + gcap[g]``; its open positions are exactly the first
``glen[g]`` of them. A tick re-marks one plain slot range (the kernels explain
why this beats an index, with figures). Opening appends to the group; closing
moves the group's last position into the hole (account lists are doubly
linked, so a move is O(1)); a group that outgrows its room moves to the end of
the slot space with a quarter more, and when the arrays themselves are full
every group is repacked into larger arrays. Slots are therefore not stable
identities across events: read them (``positions_of``, ``alive_positions``)
when needed, never keep them.

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
    P_MODE,
    P_NEXT,
    P_PREV,
    P_QTY,
    P_STATUS,
    P_SUB,
    P_SYM,
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
_MIN_CAP: Final = 16  # slots of an empty group
# Positions per step of the vectorised recomputation: bounds its temporaries
# (~10 arrays of this length) at a cost of one bincount over the accounts per step.
_RECOMPUTE_CHUNK: Final = 1 << 20


_A = TypeVar("_A", bound=npt.NDArray[Any])


def _grow_cols(a: _A, cap: int, fill: float) -> _A:
    out = np.full((a.shape[0], cap), fill, dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return cast(_A, out)


def _grow_vec(a: _A, cap: int, fill: float) -> _A:
    out = np.full(cap, fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return cast(_A, out)


def _room_for(n: I64) -> I64:
    """Slots for a group of ``n`` positions laid out afresh (bulk load, repack):
    1/16 spare, so churn rarely moves a big group, which costs ~6% of memory."""
    out: I64 = n + n // 16 + _MIN_CAP
    return out


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
        groups = 2 * params.n_instruments
        accounts = max(accounts, 16)
        # accounts
        self.acc_f: F64 = np.zeros((N_AF, accounts))
        # int64, although int32 would do: replay's typed kernels take this block as is
        self.acc_i: I64 = np.zeros((N_AI, accounts), dtype=np.int64)
        self.acc_i[A_HEAD] = -1
        self.bal: F64 = np.zeros((n_assets, accounts))
        self.bal_ts: I64 = np.full((n_assets, accounts), -1, dtype=np.int64)
        self.dirty: I32 = np.zeros(accounts, dtype=np.int32)
        self.account_ids: list[str] = []
        self._slot: dict[str, int] = {}
        # positions, in groups of contiguous slots
        self.gstart: I64 = np.arange(groups, dtype=np.int64) * _MIN_CAP
        self.gcap: I64 = np.full(groups, _MIN_CAP, dtype=np.int64)
        self.glen: I64 = np.zeros(groups, dtype=np.int64)
        self.meta: I64 = np.zeros(N_META, dtype=np.int64)
        self._alloc_positions(max(positions, groups * _MIN_CAP))
        self.meta[M_HWM] = groups * _MIN_CAP
        self._free_range(0, groups * _MIN_CAP)
        self._dead = 0  # slots of segments left behind by groups that moved
        self._sync_free()
        # collateral holders, for assets priced by ticks
        self.holders = SegmentedLists(n_assets)
        self.hold_idx: I32 = np.full((n_assets, accounts), -1, dtype=np.int32)
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
        return self.glen.reshape(2, -1)

    @property
    def sym_len(self) -> I64:
        """Open positions (cross and isolated) per instrument."""
        out: I64 = self.list_len.sum(axis=0)
        return out

    @property
    def hold_len(self) -> I64:
        """Holders (non-zero balance) of each asset, counted for assets priced by ticks."""
        return self.holders.length

    def symbol_slots(self, s: int, mode: int = MODE_CROSS) -> I32:
        """Slots of the open positions of one instrument in one margin mode."""
        g = mode * self.params.n_instruments + s
        lo = int(self.gstart[g])
        return np.arange(lo, lo + int(self.glen[g]), dtype=np.int32)

    @property
    def position_capacity(self) -> int:
        return int(self.pos_f.shape[1])

    def _alloc_positions(self, cap: int) -> None:
        # np.zeros maps untouched pages lazily: spare capacity costs address space,
        # not memory, until slots are used (only P_ACCT of used slots is written).
        self.pos_f: F64 = np.zeros((N_PF, cap))
        self.pos_i: I32 = np.zeros((N_PI, cap), dtype=np.int32)
        self.pos_ts: I64 = np.zeros(cap, dtype=np.int64)

    def _free_range(self, lo: int, hi: int) -> None:
        """Mark slots ``lo .. hi`` free (they enter the used slot range empty)."""
        self.pos_i[P_ACCT, lo:hi] = -1
        self.pos_i[P_NEXT, lo:hi] = -1
        self.pos_i[P_PREV, lo:hi] = -1

    def _sync_free(self) -> None:
        self.meta[M_NFREE] = int(self.meta[M_HWM]) - int(self.glen.sum())

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

    def _make_room(self, groups: I64, extra: I64) -> None:
        """Room for ``extra`` more positions in each of ``groups``: a group that is
        full moves to the end of the slot range with a quarter more than it needs;
        when the arrays cannot take that, or the segments groups left behind add up
        to half the open positions, every group is repacked (into larger arrays if
        they are short)."""
        need_all = self.glen[groups] + extra
        short = need_all > self.gcap[groups]
        if not short.any():
            return
        every = groups
        groups, need = groups[short], need_all[short]
        new_caps = need + need // 4 + _MIN_CAP
        hwm = int(self.meta[M_HWM])
        full = hwm + int(new_caps.sum()) > self.position_capacity
        if full or self._dead > max(4096, self.n_positions // 2):
            caps = _room_for(self.glen)
            # every group of the batch keeps the room it needs, not only the short
            # ones: a repack lays every group out afresh
            caps[every] = np.maximum(caps[every], need_all)
            caps[groups] = np.maximum(caps[groups], new_caps)
            total = int(caps.sum())
            cap = self.position_capacity
            self._repack(caps, cap if total + total // 8 <= cap else 2 * total)
            return
        for g, cap in zip(groups.tolist(), new_caps.tolist(), strict=True):
            self._free_range(hwm, hwm + cap)
            K.relocate(
                int(self.gstart[g]),
                hwm,
                int(self.glen[g]),
                self.acc_i,
                self.pos_f,
                self.pos_i,
                self.pos_ts,
            )
            self._dead += int(self.gcap[g])
            self.gstart[g] = hwm
            self.gcap[g] = cap
            hwm += cap
        self.meta[M_HWM] = hwm
        self._sync_free()

    def _repack(self, caps: I64, capacity: int) -> None:
        """Lay every group out afresh (room ``caps``) in arrays of ``capacity`` slots."""
        starts = np.concatenate(([0], np.cumsum(caps)[:-1])).astype(np.int64)
        total = int(caps.sum())
        old_f, old_i, old_ts = self.pos_f, self.pos_i, self.pos_ts
        new_of = np.full(int(self.meta[M_HWM]), -1, dtype=np.int32)
        self._alloc_positions(max(capacity, total))
        self._free_range(0, total)
        for g in range(caps.shape[0]):
            n = int(self.glen[g])
            o, d = int(self.gstart[g]), int(starts[g])
            self.pos_f[:, d : d + n] = old_f[:, o : o + n]
            self.pos_i[:, d : d + n] = old_i[:, o : o + n]
            self.pos_ts[d : d + n] = old_ts[o : o + n]
            new_of[o : o + n] = np.arange(d, d + n, dtype=np.int32)
        del old_f, old_i, old_ts
        K.remap_links(new_of, self.pos_i, total, self.acc_i, self.n_accounts)
        self.gstart, self.gcap = starts, caps.astype(np.int64)
        self.meta[M_HWM] = total
        self._dead = 0
        self._sync_free()

    def reserve(self, accounts: int, positions: int) -> None:
        """Pre-size the arrays (a known book size avoids growth copies)."""
        self._ensure_accounts(accounts)
        if positions > self.position_capacity:
            self._repack(_room_for(self.glen), positions)

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
        """Apply one validated event; returns a rejection if it is stale (or, for an
        event built in code rather than decoded, if its ts is out of range)."""
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
        if ts > self.last_event_ts:
            self.last_event_ts = ts
        self._ticks(
            np.array([s], dtype=np.int64),
            np.array([price], dtype=np.float64),
            np.array([ts], dtype=np.int64),
        )
        return None

    def _ticks(self, syms: I64, prices: F64, tss: I64) -> None:
        """Ticks of distinct symbols, already checked: one kernel call for all."""
        p = self.params
        h = self.holders
        K.apply_ticks(
            syms,
            prices,
            tss,
            p.n_instruments,
            self.n_accounts,
            self.gstart,
            self.glen,
            self.sym_price,
            self.sym_ts,
            self.asset_price,
            p.asset_price_sym,
            p.asset_haircut,
            p.br_floor,
            p.br_mmr,
            p.br_cum,
            p.br_count,
            self.acc_f,
            self.acc_i,
            self.pos_f,
            self.pos_i,
            self.bal,
            h.flat,
            h.start,
            h.length,
            self._thr,
            self.dirty,
            self.meta,
        )

    def forget_closes_before(self, ts: int) -> int:
        """Forget the close times older than ``ts`` (event time): an event for such
        a position, older than its close, is no longer told stale but applied.
        Returns how many were forgotten (the daemon calls this at each checkpoint
        with ``[state] close_retention_s``, so the closes do not pile up)."""
        closed = self._closed_ts
        old = [k for k, c in closed.items() if c < ts]
        for k in old:
            del closed[k]
        return len(old)

    @property
    def remembered_closes(self) -> int:
        """How many position closes the book holds for staleness checks."""
        return len(self._closed_ts)

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
        mode = _MODES[ev.margin_mode]
        if ev.qty != 0.0:
            g = mode * p.n_instruments + s
            self._make_room(np.array([g], dtype=np.int64), np.ones(1, dtype=np.int64))
        code = K.apply_position(
            a,
            s,
            ev.qty,
            ev.entry_price,
            mode,
            ev.isolated_margin,
            self.sub_id(ev.sub_account),
            ev.ts,
            self.sym_price[s],
            self.acc_f,
            self.acc_i,
            self.pos_f,
            self.pos_i,
            self.pos_ts,
            self.gstart,
            self.glen,
            p.n_instruments,
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
        h = self.holders
        if holds and idx < 0:
            h.ensure_room(k, 1)
            n = int(h.length[k])
            h.flat[h.start[k] + n] = a
            self.hold_idx[k, a] = n
            h.length[k] = n + 1
        elif not holds and idx >= 0:
            st = int(h.start[k])
            last = int(h.length[k]) - 1
            moved = int(h.flat[st + last])
            h.flat[st + idx] = moved
            self.hold_idx[k, moved] = idx
            self.hold_idx[k, a] = -1
            h.length[k] = last

    def apply_batch(
        self, events: Sequence[Event], *, conflate: bool = True
    ) -> list[tuple[int, Rejection]]:
        """Apply a batch in order; with ``conflate`` the ticks of one symbol collapse
        to the latest (account events still apply in order, so the end state is the
        same). Returns ``(index in batch, rejection)`` for stale events (and events
        built in code with an out-of-range ts)."""
        rejected: list[tuple[int, Rejection]] = []
        if not conflate:
            for i, ev in enumerate(events):
                r = self.apply(ev)
                if r is not None:
                    rejected.append((i, r))
            return rejected
        # Ticks and account events are taken apart by two comprehensions (C loops):
        # the ticks never pass through a Python loop of their own, their columns
        # are read by comprehensions and conflated by a compiled pass. A batch of
        # account events only (the daemon's) is told by the set of its types.
        if Tick not in set(map(type, events)):
            return self._stage_account_events(events, range(len(events)))
        tick_at = [i for i, ev in enumerate(events) if type(ev) is Tick]
        if len(tick_at) < len(events):
            others = [i for i, ev in enumerate(events) if type(ev) is not Tick]
            rejected = self._stage_account_events(events, others)
        if tick_at:
            more = self._conflated_ticks(events, tick_at)
            if more:
                rejected.extend(more)
                rejected.sort(key=lambda ir: ir[0])
        return rejected

    def _conflated_ticks(
        self, events: Sequence[Event], tick_at: list[int]
    ) -> list[tuple[int, Rejection]]:
        """The ticks of a batch (at ``tick_at``): stale ones rejected, the newest of
        each symbol applied, all symbols in one kernel call."""
        ticks = cast(list[Tick], [events[i] for i in tick_at])
        tss = [t.ts for t in ticks]
        rejected: list[tuple[int, Rejection]] = []
        if min(tss) < 0 or max(tss) > MAX_TS_MS:  # only ticks built in code
            keep = [j for j, t in enumerate(tss) if 0 <= t <= MAX_TS_MS]
            rejected = [(tick_at[j], ts_rejection("tick", t)) for j, t in enumerate(tss)
                        if not 0 <= t <= MAX_TS_MS]  # fmt: skip
            if not keep:
                return rejected
            tick_at = [tick_at[j] for j in keep]
            ticks = [ticks[j] for j in keep]
            tss = [tss[j] for j in keep]
        sid = self.params.symbol_id
        syms = np.array([sid[t.symbol] for t in ticks], dtype=np.int64)
        ts = np.array(tss, dtype=np.int64)
        px = np.array([t.price for t in ticks], dtype=np.float64)
        last, stale, older = K.conflate_ticks(syms, ts, self.sym_ts)
        for k, held in zip(stale.tolist(), older.tolist(), strict=True):
            rejected.append((tick_at[k], _stale_tick(ticks[k], held)))
        if last.shape[0]:
            self.last_event_ts = max(self.last_event_ts, int(ts[last].max()))
            self._ticks(syms[last], px[last], ts[last])
        return rejected

    def _stage_account_events(
        self, events: Sequence[Event], others: Sequence[int]
    ) -> list[tuple[int, Rejection]]:
        """Stage the account events of a batch (at ``others``) as columns for one
        kernel call; the per-event Python cost of that path is this loop."""
        p = self.params
        sid = p.symbol_id
        aid = p.asset_id
        n_sym = len(p.symbols)
        slot = self._slot
        closed_ts = self._closed_ts
        rejected: list[tuple[int, Rejection]] = []
        b = _AccountBatch()
        index, kind, acct, key, value = b.index, b.kind, b.acct, b.key, b.value
        entry, mode, iso, sub, tss, closed = b.entry, b.mode, b.iso, b.sub, b.ts, b.closed
        for i in others:
            ev = events[i]
            t = ev.ts
            if t < 0 or t > MAX_TS_MS:  # only events built in code: decoding bounds ts
                rejected.append((i, ts_rejection(_KIND[type(ev)], t)))
                continue
            a = slot.get(ev.account)  # type: ignore[union-attr]
            if a is None:
                a = self.account_slot(ev.account)  # type: ignore[union-attr]
            if type(ev) is PositionEvent:
                s = sid[ev.symbol]
                tk = a * n_sym + s
                c = closed.get(tk) if closed else None
                if c is None and closed_ts:
                    c = closed_ts.get(tk)
                if c is not None and t < c:
                    rejected.append((i, self._stale_position(ev, c)))
                    continue
                if ev.qty == 0.0:
                    closed[tk] = t
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
            tss.append(t)
        if index:
            rejected.extend(self._apply_staged(b, events))
            rejected.sort(key=lambda ir: ir[0])
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
        value = np.array(batch.value, dtype=np.float64)
        mode = np.array(batch.mode, dtype=np.int64)
        ts = np.array(batch.ts, dtype=np.int64)
        is_pos = kind == K.KIND_POSITION
        opens = is_pos & (value != 0.0)
        if opens.any():
            per_group = np.bincount(mode[opens] * ni + key[opens], minlength=2 * ni)
            groups = np.flatnonzero(per_group).astype(np.int64)
            self._make_room(groups, per_group[groups])
        codes = np.zeros(kind.shape[0], dtype=np.int64)
        K.apply_account_events(
            kind,
            np.array(batch.acct, dtype=np.int64),
            key,
            value,
            np.array(batch.entry, dtype=np.float64),
            mode,
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
            self.gstart,
            self.glen,
            ni,
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
        slots = [self.symbol_slots(s, MODE_ISOLATED) for s in range(ni) if self.glen[ni + s]]
        if not slots:
            return np.zeros(0, dtype=np.int64)
        p = np.concatenate(slots)
        out: I64 = np.unique(self.pos_i[P_ACCT, p[self.pos_i[P_STATUS, p] > 0]]).astype(np.int64)
        return out

    def drain_dirty(self) -> I64:
        """Accounts whose level (cross part or an isolated position) changed, or that
        had an account event, since the last drain; clears the list."""
        n = int(self.meta[M_NDIRTY])
        out = self.dirty[:n].astype(np.int64)
        K.reset_dirty(self.dirty, n, self.acc_i)
        self.meta[M_NDIRTY] = 0
        return out

    # ------------------------------------------------------------ exactness
    def recompute(self) -> tuple[F64, F64, F64]:
        """Wallet, uPnL and maintenance sums of every account from scratch, fully
        vectorised (numpy, no compiled code): the baseline the incremental tick is
        measured against. Positions are taken in steps of ``_RECOMPUTE_CHUNK`` so the
        temporaries stay bounded at a million accounts."""
        n = self.n_accounts
        hwm = int(self.meta[M_HWM])
        upnl = np.zeros(n)
        mm = np.zeros(n)
        pi, pf = self.pos_i, self.pos_f
        for lo in range(0, hwm, _RECOMPUTE_CHUNK):
            hi = min(hwm, lo + _RECOMPUTE_CHUNK)
            live = (pi[P_ACCT, lo:hi] >= 0) & (pi[P_MODE, lo:hi] == MODE_CROSS)
            idx = np.flatnonzero(live) + lo
            if not idx.size:
                continue
            fig = position_figures(
                self.params, pi[P_SYM, idx], pf[P_QTY, idx], pf[P_ENTRY, idx], self.sym_price
            )
            acct = pi[P_ACCT, idx]
            upnl += np.bincount(acct, weights=fig.upnl, minlength=n)[:n]
            mm += np.bincount(acct, weights=fig.mm, minlength=n)[:n]
        wb = wallet_balances(self.params, self.bal[:, :n], self.sym_price)
        return wb, upnl, mm

    def resync(self, *, record: bool = True, mark_dirty: bool = True) -> float:
        """Re-derive every figure exactly; returns (and records the largest) correction.

        Every position is re-marked from its qty, entry and the last price (brackets
        looked up afresh), every account summed from its positions and balances.
        Accounts whose level the exact figures change are marked dirty (a transition
        the alert engine must see), except after a bulk load (``mark_dirty=False``),
        where every level is new and :meth:`Engine.go_live` evaluates them."""
        n = self.n_accounts
        p = self.params
        upnl = np.zeros(n)
        mm = np.zeros(n)
        ncross = np.zeros(n, dtype=np.int32)
        niso = np.zeros(n, dtype=np.int32)
        iso_changed = np.empty(max(1, int(self.glen[p.n_instruments :].sum())), dtype=np.int32)
        k = K.derive(
            int(self.meta[M_HWM]),
            self.sym_price,
            p.br_floor,
            p.br_mmr,
            p.br_cum,
            p.br_count,
            self.pos_f,
            self.pos_i,
            self._thr,
            upnl,
            mm,
            ncross,
            niso,
            iso_changed,
        )
        self.asset_price[:] = asset_prices(p, self.sym_price)
        wb = wallet_balances(p, self.bal[:, :n], self.sym_price)
        corr = 0.0
        if n:
            af = self.acc_f
            corr = float(
                max(
                    np.max(np.abs(af[A_WB, :n] - wb)),
                    np.max(np.abs(af[A_UPNL, :n] - upnl)),
                    np.max(np.abs(af[A_MM, :n] - mm)),
                )
            )
        self.acc_f[A_WB, :n] = wb
        self.acc_f[A_UPNL, :n] = upnl
        self.acc_f[A_MM, :n] = mm
        self.acc_i[A_NCROSS, :n] = ncross
        self.acc_i[A_NISO, :n] = niso
        K.set_levels(n, self.acc_f, self.acc_i, self._thr, self.dirty, self.meta, mark_dirty)
        if mark_dirty and k:
            # a level the correction changed is a transition the alert engine must see
            K.mark_dirty_many(iso_changed[:k], self.acc_i, self.dirty, self.meta)
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

        Each group is laid out by account, so the positions a tick walks are
        contiguous and their accounts ascend. Nothing is copied per row beyond one
        sort order (the columns are written in place by a compiled pass), so a
        million-account build stays within its memory budget. Account figures are
        then derived exactly."""
        if self.n_positions:
            raise ValueError("load_positions needs a book without positions")
        # columns are taken as given (any integer or float width: the compiled pass
        # reads them directly), so a large load makes no widened copies
        a = _int_col(acct)
        n = a.shape[0]
        s = _int_col(sym)
        q = _num_col(qty)
        e = _num_col(entry)
        md = _int_col(mode) if mode is not None else np.zeros(n, dtype=np.int8)
        sb = _int_col(sub) if sub is not None else np.zeros(n, dtype=np.int8)
        im = _num_col(iso_margin) if iso_margin is not None else np.zeros(n, dtype=np.float32)
        t = _int_col(ts) if ts is not None else np.zeros(n, dtype=np.int64)
        for name, col in (("sym", s), ("qty", q), ("entry", e), ("mode", md), ("sub", sb)):
            if col.shape != (n,):
                raise ValueError(f"load_positions: {name} has shape {col.shape}, expected ({n},)")
        if im.shape != (n,) or t.shape != (n,):
            raise ValueError("load_positions: iso_margin and ts need one value per position")
        ni = self.params.n_instruments
        if n and (int(a.min()) < 0 or int(a.max()) >= self.n_accounts):
            raise ValueError("load_positions: unknown account slot")
        if n and (int(s.min()) < 0 or int(s.max()) >= ni):
            raise ValueError("load_positions: unknown instrument")
        if n and (int(md.min()) < 0 or int(md.max()) > MODE_ISOLATED):
            raise ValueError("load_positions: margin mode must be 0 (cross) or 1 (isolated)")
        counts = K.group_counts(s, md, q, ni)
        caps = _room_for(counts)
        total = int(caps.sum())
        # room for groups to move into later; lazily mapped, so free until used
        capacity = total + total // 8
        if capacity > self.position_capacity:
            self._alloc_positions(0)  # let the empty arrays go before the new ones
            self._alloc_positions(capacity)
        else:  # the bulk pass writes only non-zero values into zeroed slots
            self.pos_f[:, :total] = 0.0
            self.pos_i[:, :total] = 0
            self.pos_ts[:total] = 0
        self.gstart = np.concatenate(([0], np.cumsum(caps)[:-1])).astype(np.int64)
        self.gcap = caps
        self.glen[:] = 0
        self._free_range(0, total)
        self.meta[M_HWM] = total
        self._dead = 0
        na = self.n_accounts
        self.acc_i[A_HEAD, :na] = -1
        # by account within each group (sorting only when the input is not so already)
        if K.ascending_in_groups(a, s, md, q, ni):
            order = np.zeros(0, dtype=np.int64)
        else:
            order = np.argsort(a, kind="stable")
        dup = K.bulk_layout(
            order, a, s, q, e, md, im, sb, t, ni, self.gstart, self.glen,
            self.pos_f, self.pos_i, self.pos_ts, self.acc_i, na,
        )  # fmt: skip
        del order
        if dup >= 0:
            self.glen[:] = 0
            self._free_range(0, total)
            self.acc_i[A_HEAD, :na] = -1
            self._sync_free()
            raise ValueError("load_positions: an (account, instrument) pair appears twice")
        self._sync_free()
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
        n = self.n_accounts
        priced = self.params.asset_price_sym >= 0
        contents: list[I32] = []
        self.hold_idx[:, :] = -1
        for kk in range(len(self.params.assets)):
            holders = (
                np.flatnonzero(self.bal[kk, :n] != 0.0).astype(np.int32)
                if priced[kk]
                else np.zeros(0, dtype=np.int32)
            )
            contents.append(holders)
            self.hold_idx[kk, holders] = np.arange(holders.size, dtype=np.int32)
        self.holders.assign(contents)
        self.resync(record=False, mark_dirty=False)

    def compact(self) -> None:
        """Re-lay positions out by group and account (after churn has reordered them)."""
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
        del alive
        self.glen[:] = 0
        self._sync_free()
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


def _int_col(x: npt.ArrayLike) -> npt.NDArray[np.integer[Any]]:
    """An integer column as given (no widening copy), or converted if it is not one."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        arr = arr.astype(np.int64)
    return arr


def _num_col(x: npt.ArrayLike) -> npt.NDArray[np.floating[Any] | np.integer[Any]]:
    """A numeric column as given (float32, float64 or integers), else as float64."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        arr = arr.astype(np.float64)
    return arr


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


__all__ = ["MODE_CROSS", "MODE_ISOLATED", "MarginBook"]
