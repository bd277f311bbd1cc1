"""Per-account risk report: the figures of DESIGN.md section 4 for one account,
read from the book (used by ``monitor evaluate``, alerts and snapshots of state).

Contagion attribution: a *culprit* is a losing cross position (and the
sub-accounts aggregated), ranked by loss; a *victim* is a healthy (uPnL >= 0)
cross position of an account at or beyond the warning level: what a
liquidation would force-close although it is not losing. ``healthy`` is defined
for cross positions only (DESIGN.md section 4): an isolated position reports it
as null, since its own margin, not the account's, decides its fate.
"""

from __future__ import annotations

import math
from typing import Any

from monitor.book.layout import (
    A_WB,
    MODE_CROSS,
    P_BRACKET,
    P_ENTRY,
    P_ISO_MARGIN,
    P_MM,
    P_MODE,
    P_QTY,
    P_STATUS,
    P_SUB,
    P_SYM,
    P_UPNL,
)
from monitor.book.store import MarginBook
from monitor.risk.levels import Status, margin_ratio
from monitor.risk.liquidation import MovingLeg, distance_to_liquidation, liquidation_price

Json = dict[str, Any]


def finite(x: float | None) -> float | None:
    """JSON has no infinity: non-finite figures are reported as null."""
    if x is None or not math.isfinite(x):
        return None
    return float(x)


def account_report(book: MarginBook, a: int) -> Json:
    params = book.params
    wb = float(book.acc_f[A_WB, a])
    upnl = float(book.unrealized_pnl[a])
    mm = float(book.maintenance_margin[a])
    equity = wb + upnl
    status = Status(int(book.status[a]))
    slots = book.positions_of(a)
    positions: list[Json] = []
    cross_rows: list[Json] = []
    for p in sorted(slots, key=lambda p: params.symbols[int(book.pos_i[P_SYM, p])]):
        s = int(book.pos_i[P_SYM, p])
        inst = params.instruments[s]
        qty = float(book.pos_f[P_QTY, p])
        entry = float(book.pos_f[P_ENTRY, p])
        mark = book.mark_of(s, entry)
        pu = float(book.pos_f[P_UPNL, p])
        pmm = float(book.pos_f[P_MM, p])
        br = inst.brackets[int(book.pos_i[P_BRACKET, p])]
        cross = int(book.pos_i[P_MODE, p]) == MODE_CROSS
        if cross:
            lp = liquidation_price(qty, entry, wb, mm - pmm, upnl - pu, inst.brackets)
            solo = liquidation_price(qty, entry, wb, 0.0, 0.0, inst.brackets)
        else:
            iso = float(book.pos_f[P_ISO_MARGIN, p])
            lp = liquidation_price(qty, entry, iso, 0.0, 0.0, inst.brackets)
            solo = lp
        row: Json = {
            "symbol": inst.symbol,
            "sub_account": book.sub_labels[int(book.pos_i[P_SUB, p])],
            "margin_mode": "cross" if cross else "isolated",
            "qty": qty,
            "entry_price": entry,
            "mark_price": mark,
            "notional": abs(qty) * mark,
            "unrealized_pnl": pu,
            "mmr": br.mmr,
            "maintenance_amount": br.cum,
            "maintenance_margin": pmm,
            "liquidation_price": lp,
            "standalone_liquidation_price": solo,
            "contagion_shift": None if lp is None or solo is None else lp - solo,
            "healthy": pu >= 0.0 if cross else None,
        }
        if not cross:
            iso = float(book.pos_f[P_ISO_MARGIN, p])
            row["isolated_margin"] = iso
            row["margin_ratio"] = finite(margin_ratio(pmm, iso + pu, True))
            row["status"] = Status(int(book.pos_i[P_STATUS, p])).label
        else:
            cross_rows.append(row)
        positions.append(row)
    return {
        "account": book.account_ids[a],
        "wallet_balance": wb,
        "unrealized_pnl": upnl,
        "equity": equity,
        "maintenance_margin": mm,
        "margin_ratio": finite(margin_ratio(mm, equity, bool(cross_rows))),
        "status": status.label,
        "balances": {
            asset.name: float(book.bal[k, a])
            for k, asset in enumerate(params.assets)
            if book.bal_ts[k, a] >= 0
        },
        "positions": positions,
        "contagion": contagion(cross_rows, status),
        "distance_to_liquidation": distances(book, a, slots),
    }


def contagion(cross_rows: list[Json], status: Status) -> Json:
    losers = sorted((r for r in cross_rows if not r["healthy"]), key=lambda r: r["unrealized_pnl"])
    by_sub: dict[str, float] = {}
    for r in losers:
        by_sub[r["sub_account"]] = by_sub.get(r["sub_account"], 0.0) + r["unrealized_pnl"]
    at_risk = status >= Status.WARNING
    victims = [
        {
            "symbol": r["symbol"],
            "sub_account": r["sub_account"],
            "notional": r["notional"],
            "unrealized_pnl": r["unrealized_pnl"],
            "liquidation_price": r["liquidation_price"],
            "contagion_shift": r["contagion_shift"],
        }
        for r in sorted(cross_rows, key=lambda r: -r["notional"])
        if at_risk and r["healthy"]
    ]
    return {
        "healthy_notional_at_risk": float(sum(v["notional"] for v in victims)),
        "culprits": [
            {
                "symbol": r["symbol"],
                "sub_account": r["sub_account"],
                "unrealized_pnl": r["unrealized_pnl"],
            }
            for r in losers
        ],
        "culprit_sub_accounts": [
            {"sub_account": k, "unrealized_pnl": v}
            for k, v in sorted(by_sub.items(), key=lambda kv: kv[1])
        ],
        "victims": victims,
    }


def distances(book: MarginBook, a: int, slots: list[int]) -> dict[str, Json]:
    """Distance to liquidation of the cross part, per underlying it is exposed to."""
    params = book.params
    cross = [p for p in slots if int(book.pos_i[P_MODE, p]) == MODE_CROSS]
    if not cross:
        return {}
    wb = float(book.acc_f[A_WB, a])
    upnl = float(book.unrealized_pnl[a])
    mm = float(book.maintenance_margin[a])
    coll_by_u: dict[int, float] = {}
    for k in range(len(params.assets)):
        u = int(params.asset_underlying[k])
        amt = float(book.bal[k, a])
        if u >= 0 and amt != 0.0:
            v = amt * float(book.asset_price[k]) * (1.0 - float(params.asset_haircut[k]))
            coll_by_u[u] = coll_by_u.get(u, 0.0) + v
    unders = {int(params.sym_underlying[int(book.pos_i[P_SYM, p])]) for p in cross}
    unders |= set(coll_by_u)
    out: dict[str, Json] = {}
    for u in sorted(unders, key=lambda u: params.underlyings[u]):
        legs: list[MovingLeg] = []
        fixed_upnl, fixed_mm = upnl, mm
        for p in cross:
            s = int(book.pos_i[P_SYM, p])
            if int(params.sym_underlying[s]) != u:
                continue
            entry = float(book.pos_f[P_ENTRY, p])
            legs.append(
                MovingLeg(
                    float(book.pos_f[P_QTY, p]),
                    entry,
                    book.mark_of(s, entry),
                    params.instruments[s].brackets,
                )
            )
            fixed_upnl -= float(book.pos_f[P_UPNL, p])
            fixed_mm -= float(book.pos_f[P_MM, p])
        coll = coll_by_u.get(u, 0.0)
        down, up = distance_to_liquidation(
            wb - coll + fixed_upnl, fixed_mm, coll, legs, book.thresholds.liquidatable
        )
        out[params.underlyings[u]] = {"down": down, "up": up}
    return out
