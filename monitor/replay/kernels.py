"""Compiled passes over the book for replay: tick conflation and the figures
sampled for the summary and the report (one pass each, no temporaries)."""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

from monitor.book.layout import (
    A_MM,
    A_NCROSS,
    A_STATUS,
    A_UPNL,
    A_WB,
    MODE_CROSS,
    P_ACCT,
    P_ENTRY,
    P_MODE,
    P_QTY,
    P_SYM,
    P_UPNL,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]


@nb.njit(cache=True, nogil=True)
def conflate(sym: I32, ts: I64, held: I64, n_sym: int) -> tuple[I64, I64]:  # pragma: no cover
    """The last tick of each symbol in a run of ticks, in order of first
    appearance, and the stale ones: a tick older than the newest one before it
    of its symbol (or than the book's, ``held``). Returns ``(last, stale)``,
    row indices both."""
    newest = held.copy()
    last = np.full(n_sym, -1, dtype=np.int64)
    order = np.empty(n_sym, dtype=np.int64)
    n_order = 0
    stale = np.empty(sym.shape[0], dtype=np.int64)
    n_stale = 0
    for i in range(sym.shape[0]):
        s = sym[i]
        if ts[i] < newest[s]:
            stale[n_stale] = i
            n_stale += 1
            continue
        newest[s] = ts[i]
        if last[s] < 0:
            order[n_order] = s
            n_order += 1
        last[s] = i
    out = np.empty(n_order, dtype=np.int64)
    for k in range(n_order):
        out[k] = last[order[k]]
    return out, stale[:n_stale]


@nb.njit(cache=True, nogil=True)
def risk_sample(
    acc_f: F64,
    acc_i: I64,
    pos_f: F64,
    pos_i: I32,
    hwm: int,
    n_accounts: int,
    sym_price: F64,
    counts: I64,
    at_risk: F64,
) -> tuple[float, int, float, int, float, float]:  # pragma: no cover - compiled
    """Accounts by status (into ``counts``), healthy notional at risk per account
    (into ``at_risk``, sized ``n_accounts``) and its total, the account with the
    most, and the account with the highest margin ratio (lowest equity first
    among those with none left).

    Returns ``(total, top_account, top_value, worst_account, worst_ratio,
    worst_equity)``; accounts are -1 when there is none."""
    counts[:] = 0
    at_risk[:n_accounts] = 0.0
    worst = -1
    worst_mr = 0.0
    worst_eq = 0.0
    for a in range(n_accounts):
        st = acc_i[A_STATUS, a]
        counts[st] += 1
        mm = acc_f[A_MM, a]
        if acc_i[A_NCROSS, a] == 0:
            continue
        eq = acc_f[A_WB, a] + acc_f[A_UPNL, a]
        mr = np.inf if eq <= 0.0 else mm / eq
        if worst < 0 or mr > worst_mr or (mr == worst_mr and eq < worst_eq):
            worst = a
            worst_mr = mr
            worst_eq = eq
    total = 0.0
    for p in range(hwm):
        a = pos_i[P_ACCT, p]
        if a < 0 or pos_i[P_MODE, p] != MODE_CROSS or acc_i[A_STATUS, a] < 1:
            continue
        if pos_f[P_UPNL, p] < 0.0:
            continue
        mark = sym_price[pos_i[P_SYM, p]]
        if mark != mark:
            mark = pos_f[P_ENTRY, p]
        n = abs(pos_f[P_QTY, p]) * mark
        at_risk[a] += n
        total += n
    top = -1
    top_v = 0.0
    for a in range(n_accounts):
        if at_risk[a] > top_v:
            top_v = at_risk[a]
            top = a
    return total, top, top_v, worst, worst_mr, worst_eq


__all__ = ["conflate", "risk_sample"]
