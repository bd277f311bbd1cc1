"""Runs of ticks applied to the book in one compiled call (replay's fast path).

:meth:`MarginBook.apply_tick` is one Python call and a kernel call per tick;
from Python the call alone costs a few microseconds of argument handling, as
much as the work on a 10,000-account book. :func:`apply_run` applies
consecutive ticks in order, each through the book's own tick kernel
(:func:`~monitor.book.kernels.apply_ticks` with that one tick, exactly what
``apply_tick`` runs), so every figure, level and dirty mark comes out bit for
bit as one tick at a time. It returns to Python where a tick needs Python:

- after a tick that left accounts dirty (``stop_on_dirty``): the alert
  engine evaluates them, with that tick as the cause, as the engine would
  after that tick alone;
- before a stale tick: the book rejects it with its own message;
- before a tick at or after ``limit``: the driver samples, paces and polls
  at event-time boundaries.
"""

from __future__ import annotations

from typing import Final

import numba as nb
import numpy as np
import numpy.typing as npt

from monitor.book import kernels as K
from monitor.book.layout import M_NDIRTY
from monitor.book.store import MarginBook

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]

END: Final = 0  # every tick of the run applied
DIRTY: Final = 1  # stopped after a tick that left accounts dirty
STALE: Final = 2  # stopped before a stale tick (not applied)
LIMIT: Final = 3  # stopped before a tick at or after the time limit (not applied)

NO_LIMIT: Final = np.iinfo(np.int64).max


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
    n_acc: int,
    gstart: I64,
    glen: I64,
    sym_price: F64,
    sym_ts: I64,
    asset_price: F64,
    asset_price_sym: I64,
    haircut: F64,
    br_floor: F64,
    br_mmr: F64,
    br_cum: F64,
    br_count: I64,
    acc_f: F64,
    acc_i: I64,
    pos_f: F64,
    pos_i: I32,
    bal: F64,
    h_flat: I32,
    h_start: I64,
    h_len: I64,
    thr: F64,
    dirty: I32,
    meta: I64,
) -> tuple[int, int, int]:  # pragma: no cover - compiled
    """Apply ticks ``lo .. hi-1`` (``sym``/``price``/``ts``) like ``apply_tick`` one
    after the other. The first tick is applied whatever its time; a later one
    only while its time is before ``limit``.

    Returns ``(next, why, newest)``: the first tick not applied, why the run
    ended (:data:`END`, :data:`DIRTY`, :data:`STALE`, :data:`LIMIT`) and the
    newest time applied (-1 if none)."""
    one_s = np.empty(1, dtype=np.int64)
    one_p = np.empty(1, dtype=np.float64)
    one_t = np.empty(1, dtype=np.int64)
    newest = -1
    for i in range(lo, hi):
        t = ts[i]
        if i > lo and t >= limit:
            return i, LIMIT, newest
        s = sym[i]
        if t < sym_ts[s]:
            return i, STALE, newest
        one_s[0] = s
        one_p[0] = price[i]
        one_t[0] = t
        K.apply_ticks(one_s, one_p, one_t, n_instr, n_acc, gstart, glen, sym_price, sym_ts,
                      asset_price, asset_price_sym, haircut, br_floor, br_mmr, br_cum,
                      br_count, acc_f, acc_i, pos_f, pos_i, bal, h_flat, h_start, h_len,
                      thr, dirty, meta)  # fmt: skip
        if t > newest:
            newest = t
        if stop_on_dirty and meta[M_NDIRTY] > 0:
            return i + 1, DIRTY, newest
    return hi, END, newest


class TickRunner:
    """:func:`apply_run` bound to one book."""

    def __init__(self, book: MarginBook) -> None:
        self.book = book

    def invalidate(self) -> None:
        """Account events were applied (kept for the driver: the book's own holder
        lists are read at every run, nothing is cached here)."""

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
        book = self.book
        p = book.params
        h = book.holders
        nxt, why, newest = apply_run(
            sym, price, ts, lo, hi, limit, stop_on_dirty, p.n_instruments, book.n_accounts,
            book.gstart, book.glen, book.sym_price, book.sym_ts, book.asset_price,
            p.asset_price_sym, p.asset_haircut, p.br_floor, p.br_mmr, p.br_cum, p.br_count,
            book.acc_f, book.acc_i, book.pos_f, book.pos_i, book.bal, h.flat, h.start,
            h.length, book._thr, book.dirty, book.meta,
        )  # fmt: skip
        if newest > book.last_event_ts:
            book.last_event_ts = newest
        return nxt, why, newest


__all__ = ["DIRTY", "END", "LIMIT", "NO_LIMIT", "STALE", "TickRunner", "apply_run"]
