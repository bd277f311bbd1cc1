"""Who is to blame and what would be dragged down, read from the book for
the alerts of one account (DESIGN.md section 4, contagion).

A *culprit* is a losing cross position (with its sub-account), ranked by loss;
a *victim* is a healthy (uPnL >= 0) cross position of an account at WARNING or
worse, with its liquidation price and contagion shift. These are the figures
of :func:`monitor.risk.report.account_report`, computed without the rest of
the report (distances to liquidation), because alerts need them for many
accounts at once during a crash.

The positions are read by compiled passes (:mod:`monitor.alerts.kernels`);
what is left here builds the alert's records, one per culprit and victim.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from monitor.alerts import kernels as K
from monitor.alerts.model import Culprit, Victim
from monitor.book.layout import A_MM, A_UPNL, A_WB, M_HWM
from monitor.book.store import MarginBook
from monitor.risk.levels import Status
from monitor.risk.liquidation import liquidation_price

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def cross_exposure(book: MarginBook, slots: I64, band: float = 0.0) -> tuple[F64, F64, F64]:
    """Per account in ``slots``: healthy cross notional (positions with uPnL >= 0),
    the same counting positions whose loss is within ``band`` of their notional
    (uPnL >= -band * notional: the contagion rule's hysteresis), and the total
    cross notional."""
    return K.exposure(
        np.asarray(slots, dtype=np.int64), book.acc_i, book.pos_f, book.pos_i, book.sym_price,
        int(book.meta[M_HWM]), book.n_accounts, float(band),
    )  # fmt: skip


def attribute(
    book: MarginBook, a: int, level: int
) -> tuple[tuple[Culprit, ...], tuple[Victim, ...], float]:
    """Culprits, victims and healthy notional at risk of account ``a``'s cross part,
    with ``level`` the account's alert level (victims only from WARNING up)."""
    params = book.params
    symbols, subs = params.symbols, book.sub_labels
    wb, upnl, mm = book.acc_f[(A_WB, A_UPNL, A_MM), a].tolist()
    ints, floats = K.cross_positions(a, book.acc_i, book.pos_f, book.pos_i, book.sym_price)
    pos, sym, sub = ints.tolist()
    qty, entry, pu, pmm, notional = floats.tolist()
    losers: list[tuple[float, str, str]] = []
    healthy: list[tuple[float, int, int]] = []
    for k in range(len(pos)):
        if pu[k] < 0.0:
            losers.append((pu[k], symbols[sym[k]], subs[sub[k]]))
        elif level >= Status.WARNING:
            healthy.append((notional[k], pos[k], k))
    losers.sort()
    culprits = tuple(Culprit(s, sb, u) for u, s, sb in losers)
    victims: list[Victim] = []
    for n, _, k in sorted(healthy, key=lambda t: (-t[0], t[1])):
        s = sym[k]
        brackets = params.instruments[s].brackets
        lp = liquidation_price(qty[k], entry[k], wb, mm - pmm[k], upnl - pu[k], brackets)
        solo = liquidation_price(qty[k], entry[k], wb, 0.0, 0.0, brackets)
        shift = None if lp is None or solo is None else lp - solo
        victims.append(Victim(symbols[s], subs[sub[k]], n, pu[k], lp, shift))
    return culprits, tuple(victims), float(sum(v.notional for v in victims))
