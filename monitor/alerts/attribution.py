"""Who is to blame and what would be dragged down, read from the book for
the alerts of one account (DESIGN.md section 4, contagion).

A *culprit* is a losing cross position (with its sub-account), ranked by loss;
a *victim* is a healthy (uPnL >= 0) cross position of an account at WARNING or
worse, with its liquidation price and contagion shift. These are the figures
of :func:`monitor.risk.report.account_report`, computed without the rest of
the report (distances to liquidation), because alerts need them for many
accounts at once during a crash.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from monitor.alerts.model import Culprit, Victim
from monitor.book.layout import (
    A_MM,
    A_NCROSS,
    A_UPNL,
    A_WB,
    MODE_CROSS,
    P_ACCT,
    P_ENTRY,
    P_ISO_MARGIN,
    P_MM,
    P_MODE,
    P_QTY,
    P_SUB,
    P_SYM,
    P_UPNL,
)
from monitor.book.store import MarginBook
from monitor.risk.levels import Status, margin_ratio, margin_ratios
from monitor.risk.liquidation import liquidation_price

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# Below this many accounts, walking their position lists beats a pass over
# every position of the book.
_WALK_MAX = 512


def cross_ratios(book: MarginBook, slots: I64) -> F64:
    """Margin ratios ``MM / E`` of the cross parts of ``slots`` (0 without maintenance
    margin, infinite when equity <= 0), read for these accounts only."""
    mm = book.acc_f[A_MM, slots]
    eq = book.acc_f[A_WB, slots] + book.acc_f[A_UPNL, slots]
    return margin_ratios(mm, eq, book.acc_i[A_NCROSS, slots] > 0)


def cross_exposure(book: MarginBook, slots: I64, band: float = 0.0) -> tuple[F64, F64, F64]:
    """Per account in ``slots``: healthy cross notional (positions with uPnL >= 0),
    the same counting positions whose loss is within ``band`` of their notional
    (uPnL >= -band * notional: the contagion rule's hysteresis), and the total
    cross notional."""
    healthy = np.zeros(slots.shape[0])
    near = np.zeros(slots.shape[0])
    total = np.zeros(slots.shape[0])
    if slots.shape[0] == 0:
        return healthy, near, total
    pf, pi = book.pos_f, book.pos_i
    if slots.shape[0] <= _WALK_MAX:
        for j, a in enumerate(slots.tolist()):
            for p in book.positions_of(a):
                if pi[P_MODE, p] != MODE_CROSS:
                    continue
                s = int(pi[P_SYM, p])
                n = abs(float(pf[P_QTY, p])) * book.mark_of(s, float(pf[P_ENTRY, p]))
                pu = float(pf[P_UPNL, p])
                total[j] += n
                if pu >= 0.0:
                    healthy[j] += n
                if pu >= -band * n:
                    near[j] += n
        return healthy, near, total
    n_acc = book.n_accounts
    wanted = np.zeros(n_acc, dtype=bool)
    wanted[slots] = True
    alive = book.alive_positions()
    acct = pi[P_ACCT, alive].astype(np.int64)
    sel = wanted[acct] & (pi[P_MODE, alive] == MODE_CROSS)
    pos = alive[sel]
    acct = acct[sel]
    price = book.sym_price[pi[P_SYM, pos]]
    price = np.where(np.isnan(price), pf[P_ENTRY, pos], price)
    notional = np.abs(pf[P_QTY, pos]) * price
    upnl = pf[P_UPNL, pos]
    h_all = np.bincount(acct, weights=np.where(upnl >= 0.0, notional, 0.0), minlength=n_acc)
    b_all = np.bincount(
        acct, weights=np.where(upnl >= -band * notional, notional, 0.0), minlength=n_acc
    )
    t_all = np.bincount(acct, weights=notional, minlength=n_acc)
    return (
        h_all[slots].astype(np.float64),
        b_all[slots].astype(np.float64),
        t_all[slots].astype(np.float64),
    )


def attribute(
    book: MarginBook, a: int, level: int
) -> tuple[tuple[Culprit, ...], tuple[Victim, ...], float]:
    """Culprits, victims and healthy notional at risk of account ``a``'s cross part,
    with ``level`` the account's alert level (victims only from WARNING up)."""
    params = book.params
    symbols, subs = params.symbols, book.sub_labels
    wb, upnl, mm = book.acc_f[(A_WB, A_UPNL, A_MM), a].tolist()
    losers: list[tuple[float, str, str]] = []
    healthy: list[tuple[float, int, float, float, float, float]] = []
    for p in book.positions_of(a):
        # one read per column block (numpy scalar access is slow)
        ri = book.pos_i[:, p].tolist()
        if ri[P_MODE] != MODE_CROSS:
            continue
        s, sub = ri[P_SYM], ri[P_SUB]
        rf = book.pos_f[:, p].tolist()
        qty, entry, pu, pmm = rf[P_QTY], rf[P_ENTRY], rf[P_UPNL], rf[P_MM]
        if pu < 0.0:
            losers.append((pu, symbols[s], subs[sub]))
        elif level >= Status.WARNING:
            n = abs(qty) * book.mark_of(s, entry)
            healthy.append((n, p, qty, entry, pu, pmm))
    losers.sort()
    culprits = tuple(Culprit(sym, sub, pu) for pu, sym, sub in losers)
    victims: list[Victim] = []
    for n, p, qty, entry, pu, pmm in sorted(healthy, key=lambda t: (-t[0], t[1])):
        s = int(book.pos_i[P_SYM, p])
        brackets = params.instruments[s].brackets
        lp = liquidation_price(qty, entry, wb, mm - pmm, upnl - pu, brackets)
        solo = liquidation_price(qty, entry, wb, 0.0, 0.0, brackets)
        shift = None if lp is None or solo is None else lp - solo
        sub = book.sub_labels[int(book.pos_i[P_SUB, p])]
        victims.append(Victim(symbols[s], sub, n, pu, lp, shift))
    return culprits, tuple(victims), float(sum(v.notional for v in victims))


def isolated_figures(book: MarginBook, p: int) -> tuple[float, float, float]:
    """Margin ratio, equity and maintenance margin of an isolated position."""
    mm = float(book.pos_f[P_MM, p])
    equity = float(book.pos_f[P_ISO_MARGIN, p]) + float(book.pos_f[P_UPNL, p])
    return margin_ratio(mm, equity, True), equity, mm


def isolated_culprits(book: MarginBook, p: int) -> tuple[Culprit, ...]:
    pu = float(book.pos_f[P_UPNL, p])
    if pu >= 0.0:
        return ()
    s = int(book.pos_i[P_SYM, p])
    return (Culprit(book.params.symbols[s], book.sub_labels[int(book.pos_i[P_SUB, p])], pu),)
