"""Runs of ticks applied to the book in one compiled call (replay's fast path).

:meth:`MarginBook.apply_tick` is one Python call and three or four kernel
calls per tick; from Python each kernel call costs a few microseconds of
argument handling alone, as much as the work on a 10,000-account book.
:func:`apply_run` applies consecutive ticks in order with the book's own
kernels (:func:`~monitor.book.kernels.tick_isolated`,
:func:`~monitor.book.kernels.tick_instrument`, and
:func:`~monitor.book.kernels.tick_collateral` written out, see
:func:`_revalue`), in the order ``apply_tick`` calls them, so every figure,
level and dirty mark comes out bit for bit as one tick at a time.
It returns to Python where a tick needs Python:

- after a tick that left accounts dirty (``stop_on_dirty``): the driver
  notes the ticks of the run as causes (:meth:`~monitor.engine.Engine.note_ticks`)
  and evaluates them (:meth:`~monitor.engine.Engine.evaluate`), as the
  engine would after that tick alone;
- before a stale tick: the book rejects it with its own message;
- before a tick at or after ``limit``: the driver samples, paces and polls
  at event-time boundaries.

The collateral holder lists live in Python lists of arrays on the book;
:class:`TickRunner` keeps them as one flat copy for the kernel, rebuilt when
the driver says account events may have changed them (:meth:`TickRunner.invalidate`).
"""

from __future__ import annotations

from typing import Final

import numba as nb
import numpy as np
import numpy.typing as npt

from monitor.book import kernels as K
from monitor.book.layout import A_MM, A_NCROSS, A_STATUS, A_UPNL, A_WB, M_NDIRTY
from monitor.book.store import MarginBook

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]

END: Final = 0  # every tick of the run applied
DIRTY: Final = 1  # stopped after a tick that left accounts dirty
STALE: Final = 2  # stopped before a stale tick (not applied)
LIMIT: Final = 3  # stopped before a tick at or after the time limit (not applied)

NO_LIMIT: Final = np.iinfo(np.int64).max


@nb.njit(cache=True, nogil=True, inline="always")
def _revalue(
    hold: I64,
    lo: int,
    hi: int,
    bal: F64,
    asset_price: F64,
    haircut: F64,
    acc_f: F64,
    acc_i: I64,
    thr: F64,
    dirty: I64,
    meta: I64,
) -> None:  # pragma: no cover - compiled
    """:func:`~monitor.book.kernels.tick_collateral` over ``hold[lo:hi]``, the
    same operations in the same order. Written out because the kernel's inlined
    ``_restatus`` compiles to a loop measured 5-8 times slower here (~100 against
    ~12 ns per holder on the bench book)."""
    for j in range(lo, hi):
        a = hold[j]
        acc_f[A_WB, a] = K.wallet_of(a, bal, asset_price, haircut)
        lvl = K.level_of(acc_f[A_MM, a], acc_f[A_WB, a] + acc_f[A_UPNL, a],
                         acc_i[A_NCROSS, a] > 0, thr)  # fmt: skip
        if lvl != acc_i[A_STATUS, a]:
            acc_i[A_STATUS, a] = lvl
            K._mark_dirty(a, acc_i, dirty, meta)  # the book's dirty-list protocol


@nb.njit(cache=True, nogil=True)
def apply_run(
    sym: I32,
    price: F64,
    ts: I64,
    lo: int,
    hi: int,
    limit: int,
    stop_on_dirty: bool,
    n_instr: int,
    sym_price: F64,
    sym_ts: I64,
    asset_price: F64,
    acc_f: F64,
    acc_i: I64,
    pos_f: F64,
    pos_i: I32,
    flat: I32,
    start: I64,
    length: I64,
    br_floor: F64,
    br_mmr: F64,
    br_cum: F64,
    br_count: I64,
    thr: F64,
    dirty: I64,
    meta: I64,
    priced_start: I64,
    priced: I64,
    hold_start: I64,
    hold: I64,
    bal: F64,
    haircut: F64,
) -> tuple[int, int, int]:  # pragma: no cover - compiled
    """Apply ticks ``lo .. hi-1`` (``sym``/``price``/``ts``) like ``apply_tick`` one
    after the other. The first tick is applied whatever its time; a later one
    only while its time is before ``limit``.

    Returns ``(next, why, newest)``: the first tick not applied, why the run
    ended (:data:`END`, :data:`DIRTY`, :data:`STALE`, :data:`LIMIT`) and the
    newest time applied (-1 if none)."""
    newest = -1
    for i in range(lo, hi):
        t = ts[i]
        if i > lo and t >= limit:
            return i, LIMIT, newest
        s = sym[i]
        if t < sym_ts[s]:
            return i, STALE, newest
        p = price[i]
        sym_price[s] = p
        sym_ts[s] = t
        if t > newest:
            newest = t
        if s < n_instr:
            g = n_instr + s
            n = length[g]
            if n:
                a0 = start[g]
                K.tick_isolated(p, flat[a0 : a0 + n], n, acc_i, pos_f, pos_i, br_floor[s],
                                br_mmr[s], br_cum[s], br_count[s], thr, dirty, meta)  # fmt: skip
            n = length[s]
            a0 = start[s]
            K.tick_instrument(p, flat[a0 : a0 + n], n, acc_f, acc_i, pos_f, pos_i, br_floor[s],
                              br_mmr[s], br_cum[s], br_count[s], thr, dirty, meta)  # fmt: skip
        for j in range(priced_start[s], priced_start[s + 1]):
            k = priced[j]
            asset_price[k] = p
            h0 = hold_start[k]
            n = hold_start[k + 1] - h0
            _revalue(hold, h0, h0 + n, bal, asset_price, haircut, acc_f, acc_i, thr, dirty, meta)
        if stop_on_dirty and meta[M_NDIRTY] > 0:
            return i + 1, DIRTY, newest
    return hi, END, newest


class TickRunner:
    """:func:`apply_run` bound to one book."""

    def __init__(self, book: MarginBook) -> None:
        self.book = book
        p = book.params
        n_sym = len(p.symbols)
        # assets priced by each symbol, in asset order (as the book walks them)
        per_sym = [[k for k in range(len(p.assets)) if p.asset_price_sym[k] == s]
                   for s in range(n_sym)]  # fmt: skip
        self._priced_start = np.zeros(n_sym + 1, dtype=np.int64)
        self._priced_start[1:] = np.cumsum([len(x) for x in per_sym])
        self._priced = np.array([k for x in per_sym for k in x], dtype=np.int64)
        self._hold_start = np.zeros(len(p.assets) + 1, dtype=np.int64)
        self._hold = np.zeros(0, dtype=np.int64)
        self._thr = book.thresholds.as_array()  # the book's own level thresholds
        self._stale = True

    def invalidate(self) -> None:
        """Account events were applied: the holder lists may have changed."""
        self._stale = True

    def _holders(self) -> None:
        book = self.book
        lens = book.hold_len
        self._hold_start[1:] = np.cumsum(lens)
        parts = [book.hold_lists[k][: int(lens[k])] for k in range(lens.shape[0])]
        self._hold = np.concatenate(parts).astype(np.int64) if parts else self._hold
        self._stale = False

    def run(
        self,
        sym: I32,
        price: F64,
        ts: I64,
        lo: int,
        hi: int,
        *,
        limit: int = NO_LIMIT,
        stop_on_dirty: bool = True,
    ) -> tuple[int, int, int]:
        """Apply ticks ``lo .. hi-1``; see :func:`apply_run`. The book's
        ``last_event_ts`` follows the ticks applied."""
        if self._stale:
            self._holders()
        book = self.book
        p = book.params
        lists = book.lists
        nxt, why, newest = apply_run(
            sym, price, ts, lo, hi, limit, stop_on_dirty, p.n_instruments,
            book.sym_price, book.sym_ts, book.asset_price, book.acc_f, book.acc_i,
            book.pos_f, book.pos_i, lists.flat, lists.start, lists.length,
            p.br_floor, p.br_mmr, p.br_cum, p.br_count, self._thr, book.dirty,
            book.meta, self._priced_start, self._priced, self._hold_start, self._hold,
            book.bal, p.asset_haircut,
        )  # fmt: skip
        if newest > book.last_event_ts:
            book.last_event_ts = newest
        return nxt, why, newest


__all__ = ["DIRTY", "END", "LIMIT", "NO_LIMIT", "STALE", "TickRunner", "apply_run"]
