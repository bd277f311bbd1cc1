"""Compiled passes of the alert engine over the book's arrays.

An evaluation looks at the accounts that moved: their levels, contagion
exposure, triggers, isolated positions and, for the ones whose alerts
change, culprits and victims. Walking their positions from Python costs
about a microsecond per position and per field read, more than the rest of
an evaluation together; these kernels do the walks and the arithmetic in one
compiled call each, and the engine keeps in Python only what builds alerts.

Each kernel performs the operations of the Python code it replaced, in the
same order (positions in the order of :meth:`MarginBook.positions_of
<monitor.book.store.MarginBook.positions_of>`, the same float expressions),
so every figure, and so every alert, comes out bit for bit the same; the
property tests in ``tests/unit/test_alerts_kernels.py`` hold them to the
Python definitions.

The positions of an account are read from the book's account lists
(``A_HEAD``/``P_NEXT``, :mod:`monitor.book.layout`), only in
:func:`_first` and :func:`_after`.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

from monitor.book.layout import (
    A_HEAD,
    A_MM,
    A_NCROSS,
    A_STATUS,
    A_UPNL,
    A_WB,
    MODE_CROSS,
    N_AF,
    N_AI,
    N_PF,
    N_PI,
    P_ACCT,
    P_ENTRY,
    P_ISO_MARGIN,
    P_MM,
    P_MODE,
    P_NEXT,
    P_QTY,
    P_STATUS,
    P_SUB,
    P_SYM,
    P_UPNL,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]
U8 = npt.NDArray[np.uint8]
B = npt.NDArray[np.bool_]

# rows of the ``rules`` of :func:`cross_pass`
R_ENTER = 0  # three entry thresholds
R_HYST = 3  # hysteresis band of the levels
R_BAND = 4  # contagion uPnL band
R_ANY = 5  # 1.0: any healthy notional counts (neither an amount nor a share is set)
R_AMOUNT = 6  # 1.0 if the amount condition is on, then the amount to enter and to stay
R_SHARE = 9  # 1.0 if the share condition is on, then the share to enter and to stay
N_RULES = 12

# Below this many accounts the exposure pass walks their position lists; above
# it, one pass over every position slot of the book (the order of the sums
# differs, so the switch stays where the Python code had it).
WALK_MAX = 512
NO_TS = np.iinfo(np.int64).min  # a symbol without a tick among the causes


@nb.njit(cache=True, nogil=True, inline="always")
def _first(acc_i: I64, a: int) -> int:  # pragma: no cover - compiled
    return int(acc_i[A_HEAD, a])


@nb.njit(cache=True, nogil=True, inline="always")
def _after(pos_i: I32, p: int) -> int:  # pragma: no cover - compiled
    return int(pos_i[P_NEXT, p])


@nb.njit(cache=True, nogil=True, inline="always")
def _mark(sym_price: F64, s: int, entry: float) -> float:  # pragma: no cover - compiled
    """:meth:`MarginBook.mark_of`: the price, or the entry before the first tick."""
    m = sym_price[s]
    return entry if m != m else m


@nb.njit(cache=True, nogil=True, inline="always")
def _ratio(mm: float, eq: float, has: bool) -> float:  # pragma: no cover - compiled
    """:func:`monitor.risk.levels.margin_ratio`."""
    if not has:
        return 0.0
    if eq <= 0.0:
        return np.inf
    return mm / eq


@nb.njit(cache=True, nogil=True, inline="always")
def _top(active: int) -> int:  # pragma: no cover - compiled
    """:func:`monitor.alerts.fsm.top`: the highest bit set (0 when none)."""
    n = 0
    while active:
        active >>= 1
        n += 1
    return n


@nb.njit(cache=True, nogil=True, inline="always")
def _reaches(notional: float, total: float, rules: F64, stay: bool) -> bool:  # pragma: no cover
    """:func:`monitor.alerts.contagion._reaches` for one account: the entry
    condition, or with ``stay`` the lowered one (see :func:`cross_pass`)."""
    if rules[R_ANY] != 0.0:
        return notional > 0.0
    ok = False
    if rules[R_AMOUNT] != 0.0 and notional >= rules[R_AMOUNT + 1 + stay]:
        ok = True
    if rules[R_SHARE] != 0.0 and notional >= rules[R_SHARE + 1 + stay] * total:
        ok = True
    return ok and notional > 0.0


@nb.njit(cache=True, nogil=True)
def exposure(
    slots: I64,
    acc_i: I64,
    pos_f: F64,
    pos_i: I32,
    sym_price: F64,
    hwm: int,
    n_accounts: int,
    band: float,
) -> tuple[F64, F64, F64]:  # pragma: no cover - compiled
    """Per account in ``slots``: healthy cross notional (uPnL >= 0), the same
    within ``band`` (uPnL >= -band * notional), and the total cross notional
    (:func:`monitor.alerts.attribution.cross_exposure`)."""
    m = slots.shape[0]
    healthy = np.zeros(m)
    near = np.zeros(m)
    total = np.zeros(m)
    if m <= WALK_MAX:
        for j in range(m):
            p = _first(acc_i, slots[j])
            while p >= 0:
                if pos_i[P_MODE, p] == MODE_CROSS:
                    n = abs(pos_f[P_QTY, p]) * _mark(sym_price, pos_i[P_SYM, p], pos_f[P_ENTRY, p])
                    pu = pos_f[P_UPNL, p]
                    total[j] += n
                    if pu >= 0.0:
                        healthy[j] += n
                    if pu >= -band * n:
                        near[j] += n
                p = _after(pos_i, p)
        return healthy, near, total
    # every position slot in order, summed per account (a weighted bincount)
    row = np.full(n_accounts, -1, dtype=np.int64)
    for j in range(m):
        row[slots[j]] = j
    h_all = np.zeros(n_accounts)
    b_all = np.zeros(n_accounts)
    t_all = np.zeros(n_accounts)
    for p in range(hwm):
        a = pos_i[P_ACCT, p]
        if a < 0 or row[a] < 0 or pos_i[P_MODE, p] != MODE_CROSS:
            continue
        n = abs(pos_f[P_QTY, p]) * _mark(sym_price, pos_i[P_SYM, p], pos_f[P_ENTRY, p])
        pu = pos_f[P_UPNL, p]
        t_all[a] += n
        if pu >= 0.0:
            h_all[a] += n
        if pu >= -band * n:
            b_all[a] += n
    for j in range(m):
        a = slots[j]
        healthy[j] = h_all[a]
        near[j] = b_all[a]
        total[j] = t_all[a]
    return healthy, near, total


@nb.njit(cache=True, nogil=True)
def cross_pass(
    cand: I64,
    lvl: I8,
    act: U8,
    acc_f: F64,
    acc_i: I64,
    pos_f: F64,
    pos_i: I32,
    sym_price: F64,
    hwm: int,
    n_accounts: int,
    rules: F64,
) -> tuple[F64, I8, I8, I64, B]:  # pragma: no cover - compiled
    """The array part of an evaluation of the cross parts of ``cand``.

    Moves the hysteresis levels (``lvl``, updated in place:
    :func:`monitor.alerts.fsm.advance_many`), works out the contagion level of
    the accounts at warning or beyond (:func:`exposure`,
    :func:`monitor.alerts.contagion.contagion_holds`) and compares both with
    what is active (``act``, rows margin and contagion).

    ``rules`` (rows ``R_*``): the level thresholds and band, and the contagion
    conditions with the amounts and shares to enter and, once firing, to stay
    (lowered by the contagion hysteresis: ``scale * amount``, as
    :func:`~monitor.alerts.contagion.contagion_holds` computes them).

    Returns ``(ratio, level, contagion level, need, band)``: per account of
    ``cand``, and ``need`` the indices (into ``cand``) of those whose active
    alerts differ from their levels, ``band`` whether the level is held above
    the book's (inside a hysteresis band)."""
    m = cand.shape[0]
    e0, e1, e2 = rules[R_ENTER], rules[R_ENTER + 1], rules[R_ENTER + 2]
    hyst = rules[R_HYST]
    c0, c1, c2 = e0 - hyst, e1 - hyst, e2 - hyst
    mr = np.empty(m)
    new = np.empty(m, dtype=np.int8)
    lc = np.zeros(m, dtype=np.int8)
    band = np.empty(m, dtype=np.bool_)
    n_at = 0
    for j in range(m):
        a = cand[j]
        r = _ratio(acc_f[A_MM, a], acc_f[A_WB, a] + acc_f[A_UPNL, a], acc_i[A_NCROSS, a] > 0)
        mr[j] = r
        prev = lvl[a]
        if r != r:  # NaN keeps the level
            lv = prev
        else:
            risen = (r >= e0) + (r >= e1) + (r >= e2)
            held = (prev >= 1 and r >= c0) + (prev >= 2 and r >= c1) + (prev >= 3 and r >= c2)
            lv = max(risen, held)
        new[j] = lv
        band[j] = lv > acc_i[A_STATUS, a]
        if lv >= 1:
            n_at += 1
    for j in range(m):  # written after every level was read, as the numpy code did
        lvl[cand[j]] = new[j]
    if n_at:
        at = np.empty(n_at, dtype=np.int64)
        k = 0
        for j in range(m):
            if new[j] >= 1:
                at[k] = j
                k += 1
        healthy, near, total = exposure(
            cand[at], acc_i, pos_f, pos_i, sym_price, hwm, n_accounts, rules[R_BAND]
        )
        for k in range(n_at):
            j = at[k]
            if act[1, cand[j]] != 0:  # firing: the lowered condition, on ``near``
                ok = _reaches(near[k], total[k], rules, True)
            else:
                ok = _reaches(healthy[k], total[k], rules, False)
            if ok:
                lc[j] = new[j]
    n_need = 0
    need = np.empty(m, dtype=np.int64)
    for j in range(m):
        a = cand[j]
        if _top(act[0, a]) != new[j] or _top(act[1, a]) != lc[j]:
            need[n_need] = j
            n_need += 1
    return mr, new, lc, need[:n_need], band


@nb.njit(cache=True, nogil=True)
def newest_ticks(
    slots: I64,
    acc_i: I64,
    pos_i: I32,
    bal: F64,
    price_sym: I64,
    tick_ts: I64,
    rank: I64,
) -> I64:  # pragma: no cover - compiled
    """Per account in ``slots``: the symbol of the newest tick among the causes
    (``tick_ts``, :data:`NO_TS` where a symbol has none) that moves its cross
    part (its cross positions, and the price symbols of the collateral it
    holds), ties to the symbol of higher ``rank`` (name order); -1 if none."""
    m = slots.shape[0]
    out = np.full(m, -1, dtype=np.int64)
    n_assets = bal.shape[0]
    for j in range(m):
        a = slots[j]
        best = -1
        p = _first(acc_i, a)
        while p >= 0:
            if pos_i[P_MODE, p] == MODE_CROSS:
                s = pos_i[P_SYM, p]
                t = tick_ts[s]
                if t != NO_TS and (
                    best < 0 or t > tick_ts[best] or (t == tick_ts[best] and rank[s] > rank[best])
                ):
                    best = s
            p = _after(pos_i, p)
        for k in range(n_assets):
            s = price_sym[k]
            if s < 0 or bal[k, a] == 0.0:
                continue
            t = tick_ts[s]
            if t != NO_TS and (
                best < 0 or t > tick_ts[best] or (t == tick_ts[best] and rank[s] > rank[best])
            ):
                best = s
        out[j] = best
    return out


@nb.njit(cache=True, nogil=True)
def account_ts(a: int, acc_i: I64, pos_i: I32, pos_ts: I64, bal_ts: I64) -> int:  # pragma: no cover
    """The newest event time the book holds for account ``a`` (its balances and
    open positions), -1 if none."""
    ts = -1
    for k in range(bal_ts.shape[0]):
        if bal_ts[k, a] > ts:
            ts = bal_ts[k, a]
    p = _first(acc_i, a)
    while p >= 0:
        if pos_ts[p] > ts:
            ts = pos_ts[p]
        p = _after(pos_i, p)
    return ts


@nb.njit(cache=True, nogil=True)
def isolated_units(
    slots: I64, acc_i: I64, pos_f: F64, pos_i: I32, warn: float
) -> tuple[I64, I64, F64, B]:  # pragma: no cover - compiled
    """The isolated positions of the accounts ``slots``, in list order, account
    after account: ``start`` (account ``j``'s are columns ``start[j]:start[j+1]``),
    rows slot, symbol, level in the book and sub-account, rows margin ratio,
    equity (isolated margin + uPnL), maintenance margin and uPnL; and per account
    whether one of them reaches ``warn`` (the first entry threshold)."""
    m = slots.shape[0]
    start = np.zeros(m + 1, dtype=np.int64)
    n = 0
    for j in range(m):
        p = _first(acc_i, slots[j])
        while p >= 0:
            if pos_i[P_MODE, p] != MODE_CROSS:
                n += 1
            p = _after(pos_i, p)
        start[j + 1] = n
    ints = np.empty((4, n), dtype=np.int64)
    floats = np.empty((4, n))
    rises = np.zeros(m, dtype=np.bool_)
    k = 0
    for j in range(m):
        p = _first(acc_i, slots[j])
        while p >= 0:
            if pos_i[P_MODE, p] != MODE_CROSS:
                mm = pos_f[P_MM, p]
                e = pos_f[P_ISO_MARGIN, p] + pos_f[P_UPNL, p]
                r = _ratio(mm, e, True)
                ints[0, k] = p
                ints[1, k] = pos_i[P_SYM, p]
                ints[2, k] = pos_i[P_STATUS, p]
                ints[3, k] = pos_i[P_SUB, p]
                floats[0, k] = r
                floats[1, k] = e
                floats[2, k] = mm
                floats[3, k] = pos_f[P_UPNL, p]
                if r >= warn:
                    rises[j] = True
                k += 1
            p = _after(pos_i, p)
    return start, ints, floats, rises


@nb.njit(cache=True, nogil=True)
def cross_positions(
    a: int, acc_i: I64, pos_f: F64, pos_i: I32, sym_price: F64
) -> tuple[I64, F64]:  # pragma: no cover - compiled
    """The cross positions of account ``a`` in list order (the reads of
    :func:`monitor.alerts.attribution.attribute`), as two blocks (two arrays
    to hand back instead of eight): rows slot, symbol and sub-account, and rows
    qty, entry, uPnL, maintenance margin and notional at the mark."""
    n = 0
    p = _first(acc_i, a)
    while p >= 0:
        if pos_i[P_MODE, p] == MODE_CROSS:
            n += 1
        p = _after(pos_i, p)
    ints = np.empty((3, n), dtype=np.int64)
    floats = np.empty((5, n))
    k = 0
    p = _first(acc_i, a)
    while p >= 0:
        if pos_i[P_MODE, p] == MODE_CROSS:
            s = pos_i[P_SYM, p]
            ints[0, k] = p
            ints[1, k] = s
            ints[2, k] = pos_i[P_SUB, p]
            floats[0, k] = pos_f[P_QTY, p]
            floats[1, k] = pos_f[P_ENTRY, p]
            floats[2, k] = pos_f[P_UPNL, p]
            floats[3, k] = pos_f[P_MM, p]
            floats[4, k] = abs(pos_f[P_QTY, p]) * _mark(sym_price, s, pos_f[P_ENTRY, p])
            k += 1
        p = _after(pos_i, p)
    return ints, floats


def warm_up() -> None:
    """Load (or compile, on a first run) every kernel now, with the argument types
    of the engine's calls, rather than at the first alert of a crash."""
    acc_f, acc_i = np.zeros((N_AF, 1)), np.full((N_AI, 1), -1, dtype=np.int64)
    pos_f, pos_i = np.zeros((N_PF, 1)), np.full((N_PI, 1), -1, dtype=np.int32)
    slots, price = np.zeros(1, dtype=np.int64), np.zeros(1)
    bal, ts2 = np.zeros((1, 1)), np.zeros((1, 1), dtype=np.int64)
    lvl, act = np.zeros(1, dtype=np.int8), np.zeros((2, 1), dtype=np.uint8)
    cross_pass(slots, lvl, act, acc_f, acc_i, pos_f, pos_i, price, 0, 1, np.zeros(N_RULES))
    exposure(slots, acc_i, pos_f, pos_i, price, 0, 1, 0.0)
    newest_ticks(slots, acc_i, pos_i, bal, slots, slots, slots)
    account_ts(0, acc_i, pos_i, slots, ts2)
    isolated_units(slots, acc_i, pos_f, pos_i, 0.8)
    cross_positions(0, acc_i, pos_f, pos_i, price)


__all__ = [
    "NO_TS",
    "N_RULES",
    "WALK_MAX",
    "account_ts",
    "cross_pass",
    "cross_positions",
    "exposure",
    "isolated_units",
    "newest_ticks",
    "warm_up",
]
