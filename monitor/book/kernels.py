"""Compiled kernels of the incremental book (numba, cached on disk).

Why numba, and why this layout. Figures measured on this 2-core machine for a
tick over every instrument of a 100,000-account book (~475,000 cross
positions, arrays larger than the cache), per touched position:

- one compiled loop per position through a per-symbol slot index, account
  level recomputed per position (the previous kernel): 8.6-9.2 ns;
- the same with the account levels deferred to one pass after the positions:
  6.9-7.1 ns;
- the same, gathering the index into chunks for a vectorisable inner loop:
  6.2-6.7 ns;
- positions of a symbol in one contiguous slot range (no index), the inner
  loop over a chunk of 256 vectorised by the compiler (uPnL, notional,
  bracket by branch-free selects, maintenance, deltas), then a scalar pass
  adding the chunk's deltas to its accounts: 2.5-3.9 ns.

Two small things then took 4-7% each (measured side by side on the same
book): reading account slots as unsigned (no negative-index wrap-around per
access) and adding the deltas in a small function of its own, whose few
arrays stay in registers (in the large kernel they were reloaded from the
stack on every position).

The last is what the book does: the slots of each (margin mode, instrument)
group stay one contiguous run under churn (a close moves the group's last
position into the hole, see :func:`_group_remove`), so there is no index to
follow and nothing to re-compact. Earlier figures for a single tick on 950,000
positions: ~2 ns fused compiled loop, 6 ns ``np.add.at`` over a contiguous
index, 13 ns fancy indexing, 71 ns a boolean mask over all positions.

Levels are recomputed once per touched account after the positions (or by
one sweep over every account when most of them were touched), not once per
position: an account holding five ticked symbols is evaluated once.

Accounts are recorded in a dirty list only when their level (of the cross
part or of an isolated position) changes, when a position of an account at
risk turns from healthy to losing or back, or when an account event touched
them: what the alert engine must look at at once. A tick over a million
accounts writes almost nothing, and the cost of alerting follows the
transitions, not the number of accounts at risk (those are re-checked on the
alert engine's periodic poll, see ``AlertEngine.poll``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from monitor.book.layout import (
    A_DIRTY,
    A_HEAD,
    A_MM,
    A_NCROSS,
    A_NISO,
    A_STATUS,
    A_UPNL,
    A_WB,
    M_NDIRTY,
    M_NFREE,
    MODE_CROSS,
    OK,
    P_ACCT,
    P_BRACKET,
    P_ENTRY,
    P_ISO_MARGIN,
    P_MM,
    P_MODE,
    P_NEXT,
    P_PREV,
    P_QTY,
    P_STATUS,
    P_SUB,
    P_SYM,
    P_UPNL,
    STALE,
)

# Positions per vectorised chunk: the chunk's deltas (2 x 256 doubles) stay in L1.
CHUNK = 256
# After a batch of ticks, levels are recomputed by one sweep over every account
# once the ticks touched at least this share of them (counting positions): a
# sweep reads five sequential columns, 1.6 ns per account; revisiting the
# touched accounts through their positions costs 2.1 ns per position on a
# symbol most accounts hold, 3.5-5 ns on sparser ones (100k accounts, here).
SWEEP_SHARE = 0.4


# ---------------------------------------------------------------- small pieces
@njit(cache=True, inline="always")
def bracket_of(notional: float, b: int, floor: np.ndarray, nb: int) -> int:
    while b + 1 < nb and floor[b + 1] <= notional:
        b += 1
    while b > 0 and floor[b] > notional:
        b -= 1
    return b


@njit(cache=True, inline="always")
def _mark_dirty(a: int, acc_i: np.ndarray, dirty: np.ndarray, meta: np.ndarray) -> None:
    if acc_i[A_DIRTY, a] == 0:
        acc_i[A_DIRTY, a] = 1
        dirty[meta[M_NDIRTY]] = a
        meta[M_NDIRTY] += 1


@njit(cache=True, inline="always")
def level_of(mm: float, eq: float, has_positions: bool, thr: np.ndarray) -> int:
    # thr is (warning, critical, liquidatable); unrolled, branch-free counting
    if not has_positions:
        return 0
    if eq <= 0.0:
        return 3
    mr = mm / eq
    return int(mr >= thr[0]) + int(mr >= thr[1]) + int(mr >= thr[2])


@njit(cache=True, inline="always")
def _restatus(
    a: int,
    acc_f: np.ndarray,
    acc_i: np.ndarray,
    thr: np.ndarray,
    dirty: np.ndarray,
    meta: np.ndarray,
    force_dirty: bool,
) -> None:
    # The ratio itself is not stored (it is derived on read); an unchanged level
    # is not written back.
    lvl = level_of(acc_f[A_MM, a], acc_f[A_WB, a] + acc_f[A_UPNL, a], acc_i[A_NCROSS, a] > 0, thr)
    if force_dirty or lvl != acc_i[A_STATUS, a]:
        acc_i[A_STATUS, a] = lvl
        _mark_dirty(a, acc_i, dirty, meta)


@njit(cache=True, inline="always")
def wallet_of(a: int, bal: np.ndarray, asset_price: np.ndarray, haircut: np.ndarray) -> float:
    wb = 0.0
    for k in range(bal.shape[0]):
        amt = bal[k, a]
        if amt != 0.0:
            wb += amt * asset_price[k] * (1.0 - haircut[k])
    return wb


# ---------------------------------------------------------------- ticks
@njit(cache=True, inline="always")
def _remark(
    price: float,
    qty: np.ndarray,
    entry: np.ndarray,
    upnl: np.ndarray,
    mmv: np.ndarray,
    br: np.ndarray,
    du: np.ndarray,
    dm: np.ndarray,
    flip: np.ndarray,
    floor: np.ndarray,
    mmr: np.ndarray,
    cum: np.ndarray,
    nb: int,
) -> None:
    """Re-mark one contiguous chunk of positions at ``price``: new uPnL, bracket and
    maintenance margin stored, their deltas (and whether the uPnL changed sign)
    left in ``du``, ``dm``, ``flip`` for the account pass."""
    n = qty.shape[0]
    if nb <= 8:
        # Up to 8 brackets (every shipped instrument has 4 or 5): the bracket is
        # chosen by unrolled selects against the floors, padded with +inf, so the
        # loop has no branches and no gathers and the compiler vectorises it.
        inf = np.inf
        f1 = floor[1] if nb > 1 else inf
        f2 = floor[2] if nb > 2 else inf
        f3 = floor[3] if nb > 3 else inf
        f4 = floor[4] if nb > 4 else inf
        f5 = floor[5] if nb > 5 else inf
        f6 = floor[6] if nb > 6 else inf
        f7 = floor[7] if nb > 7 else inf
        m0, c0 = mmr[0], cum[0]
        m1, c1 = (mmr[1], cum[1]) if nb > 1 else (0.0, 0.0)
        m2, c2 = (mmr[2], cum[2]) if nb > 2 else (0.0, 0.0)
        m3, c3 = (mmr[3], cum[3]) if nb > 3 else (0.0, 0.0)
        m4, c4 = (mmr[4], cum[4]) if nb > 4 else (0.0, 0.0)
        m5, c5 = (mmr[5], cum[5]) if nb > 5 else (0.0, 0.0)
        m6, c6 = (mmr[6], cum[6]) if nb > 6 else (0.0, 0.0)
        m7, c7 = (mmr[7], cum[7]) if nb > 7 else (0.0, 0.0)
        for i in range(n):
            q = qty[i]
            u = q * (price - entry[i])
            x = abs(q) * price
            m, c, b = m0, c0, 0
            if x >= f1:
                m, c, b = m1, c1, 1
            if x >= f2:
                m, c, b = m2, c2, 2
            if x >= f3:
                m, c, b = m3, c3, 3
            if x >= f4:
                m, c, b = m4, c4, 4
            if x >= f5:
                m, c, b = m5, c5, 5
            if x >= f6:
                m, c, b = m6, c6, 6
            if x >= f7:
                m, c, b = m7, c7, 7
            mm = x * m - c
            u0 = upnl[i]
            du[i] = u - u0
            dm[i] = mm - mmv[i]
            flip[i] = (u >= 0.0) != (u0 >= 0.0)
            upnl[i] = u
            mmv[i] = mm
            br[i] = b
    else:
        for i in range(n):
            q = qty[i]
            u = q * (price - entry[i])
            x = abs(q) * price
            b = bracket_of(x, br[i], floor, nb)
            mm = x * mmr[b] - cum[b]
            u0 = upnl[i]
            du[i] = u - u0
            dm[i] = mm - mmv[i]
            flip[i] = (u >= 0.0) != (u0 >= 0.0)
            upnl[i] = u
            mmv[i] = mm
            br[i] = b


@njit(cache=True)
def _add_deltas(
    a_: np.ndarray,
    du: np.ndarray,
    dm: np.ndarray,
    flip: np.ndarray,
    acc_u: np.ndarray,
    acc_m: np.ndarray,
    status: np.ndarray,
    n: int,
) -> bool:
    """Add a chunk's deltas to its accounts; whether a position of an account at
    risk flipped. A small function of its own: the compiler keeps its few arrays in
    registers (inside the large kernel they were reloaded from the stack)."""
    flipped = False
    for i in range(n):
        a = a_[i]
        acc_u[a] += du[i]
        acc_m[a] += dm[i]
        if flip[i] and status[a] > 0:
            flipped = True
    return flipped


@njit(cache=True)
def _tick_cross(
    price: float,
    lo: int,
    n: int,
    floor: np.ndarray,
    mmr: np.ndarray,
    cum: np.ndarray,
    nb: int,
    acc_f: np.ndarray,
    acc_i: np.ndarray,
    pos_f: np.ndarray,
    pos_i: np.ndarray,
    thr: np.ndarray,
    dirty: np.ndarray,
    meta: np.ndarray,
    du: np.ndarray,
    dm: np.ndarray,
    flip: np.ndarray,
    relevel: bool,
) -> None:
    """Re-mark the cross positions in slots ``lo .. lo + n`` (one instrument) and add
    the deltas to their accounts. With ``relevel`` (a lone tick) each account's
    level is recomputed as its delta lands; otherwise levels are left to one pass
    after every tick of the batch. A position of an account at risk that turns from
    healthy to losing or back marks it dirty (its culprits and victims change)."""
    qty = pos_f[P_QTY]
    entry = pos_f[P_ENTRY]
    upnl = pos_f[P_UPNL]
    mmv = pos_f[P_MM]
    br = pos_i[P_BRACKET]
    acct = pos_i[P_ACCT]
    acc_u = acc_f[A_UPNL]
    acc_m = acc_f[A_MM]
    wb = acc_f[A_WB]
    status = acc_i[A_STATUS]
    hi = lo + n
    for c in range(lo, hi, CHUNK):
        e = min(c + CHUNK, hi)
        _remark(
            price,
            qty[c:e],
            entry[c:e],
            upnl[c:e],
            mmv[c:e],
            br[c:e],
            du,
            dm,
            flip,
            floor,
            mmr,
            cum,
            nb,
        )
        # account slots read as unsigned: no negative-index wrap-around per access
        a_ = acct[c:e].view(np.uint32)
        if relevel:
            for i in range(e - c):
                a = a_[i]
                u = acc_u[a] + du[i]
                m = acc_m[a] + dm[i]
                acc_u[a] = u
                acc_m[a] = m
                lvl = level_of(m, wb[a] + u, True, thr)
                if lvl != status[a] or (lvl > 0 and flip[i]):
                    status[a] = lvl
                    _mark_dirty(a, acc_i, dirty, meta)
        elif _add_deltas(a_, du, dm, flip, acc_u, acc_m, status, e - c):
            for i in range(e - c):  # rare: a losing/winning flip somewhere in the chunk
                a = a_[i]
                if flip[i] and status[a] > 0:
                    _mark_dirty(a, acc_i, dirty, meta)


@njit(cache=True)
def _tick_isolated(
    price: float,
    lo: int,
    n: int,
    floor: np.ndarray,
    mmr: np.ndarray,
    cum: np.ndarray,
    nb: int,
    acc_i: np.ndarray,
    pos_f: np.ndarray,
    pos_i: np.ndarray,
    thr: np.ndarray,
    dirty: np.ndarray,
    meta: np.ndarray,
    du: np.ndarray,
    dm: np.ndarray,
    flip: np.ndarray,
) -> None:
    """Re-mark the isolated positions in slots ``lo .. lo + n``, each its own unit:
    the same vectorised chunks, then each position's level from its own margin."""
    qty = pos_f[P_QTY]
    entry = pos_f[P_ENTRY]
    upnl = pos_f[P_UPNL]
    mmv = pos_f[P_MM]
    iso = pos_f[P_ISO_MARGIN]
    br = pos_i[P_BRACKET]
    acct = pos_i[P_ACCT]
    status = pos_i[P_STATUS]
    hi = lo + n
    for c in range(lo, hi, CHUNK):
        e = min(c + CHUNK, hi)
        _remark(
            price,
            qty[c:e],
            entry[c:e],
            upnl[c:e],
            mmv[c:e],
            br[c:e],
            du,
            dm,
            flip,
            floor,
            mmr,
            cum,
            nb,
        )
        for p in range(c, e):
            lvl = level_of(mmv[p], iso[p] + upnl[p], True, thr)
            if lvl != status[p]:
                status[p] = lvl
                _mark_dirty(acct[p], acc_i, dirty, meta)


@njit(cache=True)
def conflate_ticks(
    syms: np.ndarray, tss: np.ndarray, sym_ts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The newest tick of each symbol in a batch, in order of first appearance, and
    the stale ones: older than the newest before them of their symbol (or than the
    book's). Returns ``(last, stale, older_than)``, indices into the batch and the
    ts each stale tick was older than."""
    newest = sym_ts.copy()
    last = np.full(sym_ts.shape[0], -1, dtype=np.int64)
    order = np.empty(sym_ts.shape[0], dtype=np.int64)
    n_order = 0
    n = syms.shape[0]
    stale = np.empty(n, dtype=np.int64)
    older = np.empty(n, dtype=np.int64)
    n_stale = 0
    for i in range(n):
        s = syms[i]
        if tss[i] < newest[s]:
            stale[n_stale] = i
            older[n_stale] = newest[s]
            n_stale += 1
            continue
        newest[s] = tss[i]
        if last[s] < 0:
            order[n_order] = s
            n_order += 1
        last[s] = i
    out = np.empty(n_order, dtype=np.int64)
    for k in range(n_order):
        out[k] = last[order[k]]
    return out, stale[:n_stale], older[:n_stale]


@njit(cache=True)
def apply_ticks(
    syms: np.ndarray,
    prices: np.ndarray,
    tss: np.ndarray,
    n_instr: int,
    n_acc: int,
    gstart: np.ndarray,
    glen: np.ndarray,
    sym_price: np.ndarray,
    sym_ts: np.ndarray,
    asset_price: np.ndarray,
    asset_price_sym: np.ndarray,
    haircut: np.ndarray,
    br_floor: np.ndarray,
    br_mmr: np.ndarray,
    br_cum: np.ndarray,
    br_count: np.ndarray,
    acc_f: np.ndarray,
    acc_i: np.ndarray,
    pos_f: np.ndarray,
    pos_i: np.ndarray,
    bal: np.ndarray,
    h_flat: np.ndarray,
    h_start: np.ndarray,
    h_len: np.ndarray,
    thr: np.ndarray,
    dirty: np.ndarray,
    meta: np.ndarray,
) -> None:
    """Apply ticks of distinct symbols (already checked for staleness) in one call:
    re-mark the positions of each instrument, re-value the collateral of holders of
    the assets they price, then recompute the level of every touched account."""
    du = np.empty(CHUNK)
    dm = np.empty(CHUNK)
    flip = np.empty(CHUNK, dtype=np.bool_)
    n_assets = asset_price_sym.shape[0]
    moved = np.zeros(n_assets, dtype=np.bool_)
    # A lone instrument tick moving no collateral levels its accounts as it goes
    # (one pass); otherwise an account holding several ticked symbols is levelled
    # once, after all of them.
    lone = syms.shape[0] == 1 and syms[0] < n_instr
    for k in range(n_assets):
        if lone and asset_price_sym[k] == syms[0]:
            lone = False
    touched = 0
    for j in range(syms.shape[0]):
        s = syms[j]
        price = prices[j]
        sym_price[s] = price
        sym_ts[s] = tss[j]
        if s < n_instr:
            nb = br_count[s]
            g = n_instr + s
            if glen[g] > 0:
                _tick_isolated(
                    price,
                    gstart[g],
                    glen[g],
                    br_floor[s],
                    br_mmr[s],
                    br_cum[s],
                    nb,
                    acc_i,
                    pos_f,
                    pos_i,
                    thr,
                    dirty,
                    meta,
                    du,
                    dm,
                    flip,
                )
            _tick_cross(
                price,
                gstart[s],
                glen[s],
                br_floor[s],
                br_mmr[s],
                br_cum[s],
                nb,
                acc_f,
                acc_i,
                pos_f,
                pos_i,
                thr,
                dirty,
                meta,
                du,
                dm,
                flip,
                lone,
            )
            touched += glen[s]
        for k in range(n_assets):
            if asset_price_sym[k] == s:
                asset_price[k] = price
                if not moved[k]:
                    moved[k] = True
                    touched += h_len[k]
    if lone:
        return
    # collateral after every asset price of the batch is in place
    for k in range(n_assets):
        if moved[k]:
            h0 = h_start[k]
            for j in range(h_len[k]):
                a = h_flat[h0 + j]
                acc_f[A_WB, a] = wallet_of(a, bal, asset_price, haircut)
    # levels (loop bodies written out: a helper taking the arrays, even inlined,
    # measured 25x slower here, ~50 ns per account, for its reference counting)
    status = acc_i[A_STATUS]
    ncross = acc_i[A_NCROSS]
    wb = acc_f[A_WB]
    au = acc_f[A_UPNL]
    am = acc_f[A_MM]
    if touched >= SWEEP_SHARE * n_acc:
        for a in range(n_acc):
            lvl = level_of(am[a], wb[a] + au[a], ncross[a] > 0, thr)
            if lvl != status[a]:
                status[a] = lvl
                _mark_dirty(a, acc_i, dirty, meta)
        return
    acct = pos_i[P_ACCT]
    for j in range(syms.shape[0]):
        s = syms[j]
        if s < n_instr:
            for p in range(gstart[s], gstart[s] + glen[s]):
                a = acct[p]
                lvl = level_of(am[a], wb[a] + au[a], ncross[a] > 0, thr)
                if lvl != status[a]:
                    status[a] = lvl
                    _mark_dirty(a, acc_i, dirty, meta)
    for k in range(n_assets):
        if moved[k]:
            h0 = h_start[k]
            for j in range(h_len[k]):
                a = h_flat[h0 + j]
                lvl = level_of(am[a], wb[a] + au[a], ncross[a] > 0, thr)
                if lvl != status[a]:
                    status[a] = lvl
                    _mark_dirty(a, acc_i, dirty, meta)


# ---------------------------------------------------------------- slots and lists
@njit(cache=True)
def find_position(a: int, s: int, acc_i: np.ndarray, pos_i: np.ndarray) -> int:
    p = acc_i[A_HEAD, a]
    while p >= 0 and pos_i[P_SYM, p] != s:
        p = pos_i[P_NEXT, p]
    return int(p)


@njit(cache=True, inline="always")
def _link(p: int, a: int, acc_i: np.ndarray, pos_i: np.ndarray) -> None:
    """Put slot ``p`` at the head of account ``a``'s list."""
    h = acc_i[A_HEAD, a]
    pos_i[P_NEXT, p] = h
    pos_i[P_PREV, p] = -1
    if h >= 0:
        pos_i[P_PREV, h] = p
    acc_i[A_HEAD, a] = p


@njit(cache=True, inline="always")
def _unlink(p: int, acc_i: np.ndarray, pos_i: np.ndarray) -> None:
    prv = pos_i[P_PREV, p]
    nxt = pos_i[P_NEXT, p]
    if prv >= 0:
        pos_i[P_NEXT, prv] = nxt
    else:
        acc_i[A_HEAD, pos_i[P_ACCT, p]] = nxt
    if nxt >= 0:
        pos_i[P_PREV, nxt] = prv


@njit(cache=True, inline="always")
def _clear(p: int, pos_f: np.ndarray, pos_i: np.ndarray, pos_ts: np.ndarray) -> None:
    for r in range(pos_f.shape[0]):
        pos_f[r, p] = 0.0
    for r in range(pos_i.shape[0]):
        pos_i[r, p] = 0
    pos_i[P_ACCT, p] = -1
    pos_i[P_NEXT, p] = -1
    pos_i[P_PREV, p] = -1
    pos_ts[p] = 0


@njit(cache=True, inline="always")
def _move(
    src: int,
    dst: int,
    acc_i: np.ndarray,
    pos_f: np.ndarray,
    pos_i: np.ndarray,
    pos_ts: np.ndarray,
) -> None:
    """Move the position in slot ``src`` to the free slot ``dst``, keeping its place
    in its account's list (the list is doubly linked, so this is O(1))."""
    for r in range(pos_f.shape[0]):
        pos_f[r, dst] = pos_f[r, src]
    for r in range(pos_i.shape[0]):
        pos_i[r, dst] = pos_i[r, src]
    pos_ts[dst] = pos_ts[src]
    prv = pos_i[P_PREV, dst]
    nxt = pos_i[P_NEXT, dst]
    if prv >= 0:
        pos_i[P_NEXT, prv] = dst
    else:
        acc_i[A_HEAD, pos_i[P_ACCT, dst]] = dst
    if nxt >= 0:
        pos_i[P_PREV, nxt] = dst
    _clear(src, pos_f, pos_i, pos_ts)


@njit(cache=True, inline="always")
def _group_remove(
    p: int,
    g: int,
    gstart: np.ndarray,
    glen: np.ndarray,
    acc_i: np.ndarray,
    pos_f: np.ndarray,
    pos_i: np.ndarray,
    pos_ts: np.ndarray,
    meta: np.ndarray,
) -> None:
    """Free slot ``p`` (already unlinked) of group ``g``: the group's last position
    moves into the hole, so the group stays one contiguous run of slots."""
    last = gstart[g] + glen[g] - 1
    if p != last:
        _move(last, p, acc_i, pos_f, pos_i, pos_ts)
    else:
        _clear(p, pos_f, pos_i, pos_ts)
    glen[g] -= 1
    meta[M_NFREE] += 1


@njit(cache=True)
def relocate(
    src: int,
    dst: int,
    n: int,
    acc_i: np.ndarray,
    pos_f: np.ndarray,
    pos_i: np.ndarray,
    pos_ts: np.ndarray,
) -> None:
    """Move a group's ``n`` positions from slot ``src`` on to free slots from ``dst``
    (ranges apart). An account holds one position per instrument, so no position
    of the moved run is another one's neighbour in an account list."""
    for j in range(n):
        _move(src + j, dst + j, acc_i, pos_f, pos_i, pos_ts)


@njit(cache=True)
def remap_links(
    new_of: np.ndarray, pos_i: np.ndarray, hwm: int, acc_i: np.ndarray, n_acc: int
) -> None:
    """After positions were copied to new slots (``new_of[old]``), point the account
    lists at the new slots."""
    for p in range(hwm):
        if pos_i[P_ACCT, p] < 0:
            continue
        nxt = pos_i[P_NEXT, p]
        if nxt >= 0:
            pos_i[P_NEXT, p] = new_of[nxt]
        prv = pos_i[P_PREV, p]
        if prv >= 0:
            pos_i[P_PREV, p] = new_of[prv]
    for a in range(n_acc):
        h = acc_i[A_HEAD, a]
        if h >= 0:
            acc_i[A_HEAD, a] = new_of[h]


# ---------------------------------------------------------------- account events
@njit(cache=True)
def _apply_position(
    a: int,
    s: int,
    qty: float,
    entry: float,
    mode: int,
    iso_margin: float,
    sub: int,
    ts: int,
    mark: float,
    acc_f: np.ndarray,
    acc_i: np.ndarray,
    pos_f: np.ndarray,
    pos_i: np.ndarray,
    pos_ts: np.ndarray,
    gstart: np.ndarray,
    glen: np.ndarray,
    n_instr: int,
    floor: np.ndarray,
    mmr: np.ndarray,
    cum: np.ndarray,
    nb: int,
    thr: np.ndarray,
    dirty: np.ndarray,
    meta: np.ndarray,
) -> int:
    p = find_position(a, s, acc_i, pos_i)
    b = 0
    if p >= 0:
        if ts < pos_ts[p]:
            return STALE
        old_mode = pos_i[P_MODE, p]
        b = pos_i[P_BRACKET, p]
        if old_mode == MODE_CROSS:
            acc_f[A_UPNL, a] -= pos_f[P_UPNL, p]
            acc_f[A_MM, a] -= pos_f[P_MM, p]
            acc_i[A_NCROSS, a] -= 1
        else:
            acc_i[A_NISO, a] -= 1
        if qty == 0.0 or old_mode != mode:
            _unlink(p, acc_i, pos_i)
            _group_remove(
                p, old_mode * n_instr + s, gstart, glen, acc_i, pos_f, pos_i, pos_ts, meta
            )
            p = -1
    if qty != 0.0:
        if p < 0:
            g = mode * n_instr + s
            p = gstart[g] + glen[g]  # the caller guarantees room in the group
            glen[g] += 1
            meta[M_NFREE] -= 1
            pos_i[P_ACCT, p] = a
            pos_i[P_SYM, p] = s
            _link(p, a, acc_i, pos_i)
        price = entry if np.isnan(mark) else mark
        u = qty * (price - entry)
        notional = abs(qty) * price
        b = bracket_of(notional, b, floor, nb)
        mm = notional * mmr[b] - cum[b]
        pos_f[P_QTY, p] = qty
        pos_f[P_ENTRY, p] = entry
        pos_f[P_ISO_MARGIN, p] = iso_margin
        pos_f[P_UPNL, p] = u
        pos_f[P_MM, p] = mm
        pos_i[P_MODE, p] = mode
        pos_i[P_BRACKET, p] = b
        pos_i[P_SUB, p] = sub
        pos_ts[p] = ts
        if mode == MODE_CROSS:
            acc_f[A_UPNL, a] += u
            acc_f[A_MM, a] += mm
            acc_i[A_NCROSS, a] += 1
            pos_i[P_STATUS, p] = 0
        else:
            acc_i[A_NISO, a] += 1
            pos_i[P_STATUS, p] = level_of(mm, iso_margin + u, True, thr)
    # an account without positions carries exact zeros (no drift left behind)
    if acc_i[A_NCROSS, a] == 0:
        acc_f[A_UPNL, a] = 0.0
        acc_f[A_MM, a] = 0.0
    _restatus(a, acc_f, acc_i, thr, dirty, meta, True)
    return OK


@njit(cache=True)
def apply_position(
    a: int,
    s: int,
    qty: float,
    entry: float,
    mode: int,
    iso_margin: float,
    sub: int,
    ts: int,
    mark: float,
    acc_f: np.ndarray,
    acc_i: np.ndarray,
    pos_f: np.ndarray,
    pos_i: np.ndarray,
    pos_ts: np.ndarray,
    gstart: np.ndarray,
    glen: np.ndarray,
    n_instr: int,
    floor: np.ndarray,
    mmr: np.ndarray,
    cum: np.ndarray,
    nb: int,
    thr: np.ndarray,
    dirty: np.ndarray,
    meta: np.ndarray,
) -> int:
    """Set one position (full state; qty 0 closes it). ``mark`` is NaN before the
    symbol's first tick, in which case the position is marked at its entry price.
    The caller guarantees room in the position's group."""
    return _apply_position(
        a,
        s,
        qty,
        entry,
        mode,
        iso_margin,
        sub,
        ts,
        mark,
        acc_f,
        acc_i,
        pos_f,
        pos_i,
        pos_ts,
        gstart,
        glen,
        n_instr,
        floor,
        mmr,
        cum,
        nb,
        thr,
        dirty,
        meta,
    )


@njit(cache=True)
def apply_balance(
    a: int,
    k: int,
    amount: float,
    ts: int,
    bal: np.ndarray,
    bal_ts: np.ndarray,
    asset_price: np.ndarray,
    haircut: np.ndarray,
    acc_f: np.ndarray,
    acc_i: np.ndarray,
    thr: np.ndarray,
    dirty: np.ndarray,
    meta: np.ndarray,
) -> int:
    """Set one asset balance of an account (full state). Holder lists are kept by the caller."""
    if ts < bal_ts[k, a]:
        return STALE
    bal[k, a] = amount
    bal_ts[k, a] = ts
    acc_f[A_WB, a] = wallet_of(a, bal, asset_price, haircut)
    _restatus(a, acc_f, acc_i, thr, dirty, meta, True)
    return OK


KIND_POSITION = 0
KIND_BALANCE = 1


@njit(cache=True)
def apply_account_events(
    kind: np.ndarray,
    acct: np.ndarray,
    key: np.ndarray,
    value: np.ndarray,
    entry: np.ndarray,
    mode: np.ndarray,
    iso_margin: np.ndarray,
    sub: np.ndarray,
    ts: np.ndarray,
    codes: np.ndarray,
    sym_price: np.ndarray,
    acc_f: np.ndarray,
    acc_i: np.ndarray,
    pos_f: np.ndarray,
    pos_i: np.ndarray,
    pos_ts: np.ndarray,
    gstart: np.ndarray,
    glen: np.ndarray,
    n_instr: int,
    br_floor: np.ndarray,
    br_mmr: np.ndarray,
    br_cum: np.ndarray,
    br_count: np.ndarray,
    bal: np.ndarray,
    bal_ts: np.ndarray,
    asset_price: np.ndarray,
    haircut: np.ndarray,
    thr: np.ndarray,
    dirty: np.ndarray,
    meta: np.ndarray,
) -> None:
    """Apply a batch of position (``key`` = symbol, ``value`` = qty) and balance
    (``key`` = asset, ``value`` = amount) events in order, one call for the batch:
    the per-event cost is the work itself, not the call. ``codes[i]`` receives
    OK or STALE. The caller guarantees room in every group an open may land in."""
    for i in range(kind.shape[0]):
        a = acct[i]
        k = key[i]
        if kind[i] == KIND_POSITION:
            codes[i] = _apply_position(
                a,
                k,
                value[i],
                entry[i],
                mode[i],
                iso_margin[i],
                sub[i],
                ts[i],
                sym_price[k],
                acc_f,
                acc_i,
                pos_f,
                pos_i,
                pos_ts,
                gstart,
                glen,
                n_instr,
                br_floor[k],
                br_mmr[k],
                br_cum[k],
                br_count[k],
                thr,
                dirty,
                meta,
            )
        elif ts[i] < bal_ts[k, a]:
            codes[i] = STALE
        else:
            bal[k, a] = value[i]
            bal_ts[k, a] = ts[i]
            acc_f[A_WB, a] = wallet_of(a, bal, asset_price, haircut)
            _restatus(a, acc_f, acc_i, thr, dirty, meta, True)
            codes[i] = OK


# ---------------------------------------------------------------- bulk and exact
@njit(cache=True)
def ascending_in_groups(
    acct: np.ndarray, sym: np.ndarray, mode: np.ndarray, qty: np.ndarray, n_instr: int
) -> bool:
    """Whether, taken in input order, every group's accounts already ascend (then a
    bulk load needs no sort: a generated book or a snapshot usually comes so)."""
    last = np.full(2 * n_instr, -1, dtype=np.int64)
    for i in range(acct.shape[0]):
        if qty[i] == 0.0:
            continue
        g = mode[i] * n_instr + sym[i]
        if acct[i] < last[g]:
            return False
        last[g] = acct[i]
    return True


@njit(cache=True)
def group_counts(sym: np.ndarray, mode: np.ndarray, qty: np.ndarray, n_instr: int) -> np.ndarray:
    """Open positions per group ``mode * n_instr + sym`` (without a temporary per row)."""
    out = np.zeros(2 * n_instr, dtype=np.int64)
    for i in range(sym.shape[0]):
        if qty[i] != 0.0:
            out[mode[i] * n_instr + sym[i]] += 1
    return out


@njit(cache=True)
def bulk_layout(
    order: np.ndarray,
    acct: np.ndarray,
    sym: np.ndarray,
    qty: np.ndarray,
    entry: np.ndarray,
    mode: np.ndarray,
    iso_margin: np.ndarray,
    sub: np.ndarray,
    ts: np.ndarray,
    n_instr: int,
    gstart: np.ndarray,
    glen: np.ndarray,
    pos_f: np.ndarray,
    pos_i: np.ndarray,
    pos_ts: np.ndarray,
    acc_i: np.ndarray,
    n_acc: int,
) -> int:
    """Install positions (visited in ``order``, or in input order if ``order`` is
    empty; closed ones skipped) into empty, zeroed groups with room for them, each
    group in visiting order, and link the account lists. Returns -1, or a slot holding an
    (account, instrument) pair seen twice."""
    by_order = order.shape[0] > 0
    for j in range(acct.shape[0]):
        i = order[j] if by_order else j
        if qty[i] == 0.0:
            continue
        g = mode[i] * n_instr + sym[i]
        p = gstart[g] + glen[g]
        glen[g] += 1
        pos_f[P_QTY, p] = qty[i]
        pos_f[P_ENTRY, p] = entry[i]
        pos_i[P_ACCT, p] = acct[i]
        pos_i[P_SYM, p] = sym[i]
        pos_ts[p] = ts[i]
        # The slots come zeroed, and freshly allocated pages are only backed by
        # memory once written: zeros are not written, so columns that are zero
        # for most positions (isolated margin, mode, sub-account label; the
        # status is zero until the exact pass) cost nothing for cross positions.
        if iso_margin[i] != 0.0:
            pos_f[P_ISO_MARGIN, p] = iso_margin[i]
        if mode[i] != 0:
            pos_i[P_MODE, p] = mode[i]
        if sub[i] != 0:
            pos_i[P_SUB, p] = sub[i]
    # an account holds one position per instrument, whatever its mode
    seen = np.full(n_acc, -1, dtype=np.int32)
    for s in range(n_instr):
        for g in (s, n_instr + s):
            for p in range(gstart[g], gstart[g] + glen[g]):
                a = pos_i[P_ACCT, p]
                if seen[a] == s:
                    return p
                seen[a] = s
    for g in range(glen.shape[0]):
        for p in range(gstart[g], gstart[g] + glen[g]):
            _link(p, pos_i[P_ACCT, p], acc_i, pos_i)
    return -1


@njit(cache=True)
def derive(
    hwm: int,
    sym_price: np.ndarray,
    br_floor: np.ndarray,
    br_mmr: np.ndarray,
    br_cum: np.ndarray,
    br_count: np.ndarray,
    pos_f: np.ndarray,
    pos_i: np.ndarray,
    thr: np.ndarray,
    upnl: np.ndarray,
    mm: np.ndarray,
    ncross: np.ndarray,
    niso: np.ndarray,
    iso_changed: np.ndarray,
) -> int:
    """Every position's figures from scratch (marks, brackets looked up from the
    first), and per account the sums and counts of the cross part into ``upnl``,
    ``mm``, ``ncross``, ``niso`` (zeroed by the caller). Accounts of isolated
    positions whose level changed go to ``iso_changed``; returns how many."""
    n_changed = 0
    for p in range(hwm):
        a = pos_i[P_ACCT, p]
        if a < 0:
            continue
        s = pos_i[P_SYM, p]
        q = pos_f[P_QTY, p]
        e = pos_f[P_ENTRY, p]
        mark = sym_price[s]
        if np.isnan(mark):
            mark = e
        x = abs(q) * mark
        b = bracket_of(x, 0, br_floor[s], br_count[s])
        m = x * br_mmr[s, b] - br_cum[s, b]
        u = q * (mark - e)
        pos_f[P_UPNL, p] = u
        pos_f[P_MM, p] = m
        pos_i[P_BRACKET, p] = b
        if pos_i[P_MODE, p] == MODE_CROSS:
            upnl[a] += u
            mm[a] += m
            ncross[a] += 1
        else:
            niso[a] += 1
            lvl = level_of(m, pos_f[P_ISO_MARGIN, p] + u, True, thr)
            if lvl != pos_i[P_STATUS, p]:
                pos_i[P_STATUS, p] = lvl
                iso_changed[n_changed] = a
                n_changed += 1
    return n_changed


@njit(cache=True)
def set_levels(
    n_acc: int,
    acc_f: np.ndarray,
    acc_i: np.ndarray,
    thr: np.ndarray,
    dirty: np.ndarray,
    meta: np.ndarray,
    mark: bool,
) -> None:
    """Recompute every account's level; with ``mark``, changed ones go dirty."""
    for a in range(n_acc):
        lvl = level_of(
            acc_f[A_MM, a], acc_f[A_WB, a] + acc_f[A_UPNL, a], acc_i[A_NCROSS, a] > 0, thr
        )
        if lvl != acc_i[A_STATUS, a]:
            acc_i[A_STATUS, a] = lvl
            if mark:
                _mark_dirty(a, acc_i, dirty, meta)


@njit(cache=True)
def mark_dirty_many(
    slots: np.ndarray, acc_i: np.ndarray, dirty: np.ndarray, meta: np.ndarray
) -> None:
    for j in range(slots.shape[0]):
        _mark_dirty(slots[j], acc_i, dirty, meta)


@njit(cache=True)
def reset_dirty(dirty: np.ndarray, n: int, acc_i: np.ndarray) -> None:
    for j in range(n):
        acc_i[A_DIRTY, dirty[j]] = 0
