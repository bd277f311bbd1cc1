"""Plain-text tables of a liquidation map and a cascade (``monitor stress``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from monitor.cascade.engine import CascadeResult
from monitor.cascade.liqmap import LiquidationMap
from monitor.cascade.shocks import move_label


def money(x: float) -> str:
    """``1234567.0`` -> ``"1.23M"``."""
    a = abs(x)
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if a >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.2f}"


def pct(x: float) -> str:
    return f"{x * 100:+.2f}%"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned first column, right-aligned others."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def format_map(m: LiquidationMap) -> str:
    """One row per move; per underlying the notional and (accounts) liquidatable."""
    shown = [u for u in range(len(m.underlyings)) if m.accounts[u].any()]
    title = "Liquidation map: cross notional (accounts) liquidatable if one underlying moves"
    if not shown:
        return f"{title}\nno account becomes liquidatable within the grid"
    rows = [
        [move_label(float(x))] + [f"{money(m.notional[u, j])} ({m.accounts[u, j]})" for u in shown]
        for j, x in enumerate(m.moves)
    ]
    quiet = [m.underlyings[u] for u in range(len(m.underlyings)) if u not in shown]
    out = f"{title}\n" + table(["move", *(m.underlyings[u] for u in shown)], rows)
    if quiet:
        out += f"\nnothing liquidatable within the grid on: {', '.join(quiet)}"
    return out


def format_cascade(r: CascadeResult) -> str:
    shocked = r.scenario.as_dict()
    unders = [u for u in r.underlyings if r.final_moves[u] != 0.0 or u in shocked]
    order = list(r.initial_prices)
    syms = sorted(
        {s for rd in r.rounds for s, v in rd.notional_liquidated.items() if v != 0.0},
        key=order.index,
    )
    header = ["round", "accounts", "liquidated", "healthy destroyed", "bad debt"]
    rows = [
        [
            str(rd.round),
            str(rd.accounts_liquidated),
            money(rd.total_notional),
            money(rd.total_healthy_destroyed),
            money(rd.bad_debt),
            *(pct(rd.moves[u]) for u in unders),
        ]
        for rd in r.rounds
    ]
    rows.append(["final", "", "", "", "", *(pct(r.final_moves[u]) for u in unders)])
    parts = [
        f"Cascade: {r.scenario.label} (impact {r.impact.value}, at most {r.max_rounds} rounds)",
        "",
        table([*header, *(f"{u} move" for u in unders)], rows),
    ]
    if syms:
        by_sym = [
            [str(rd.round), *(money(rd.notional_liquidated[s]) for s in syms)] for rd in r.rounds
        ]
        parts += ["", "Notional liquidated by symbol:", table(["round", *syms], by_sym)]
    spill = r.spillover
    rows_i = [i for i in range(len(r.underlyings)) if spill[i].any()]
    cols_j = [j for j in range(len(r.underlyings)) if spill[:, j].any()]
    if rows_i:
        cells = [
            [r.underlyings[i], *(money(spill[i, j]) if spill[i, j] else "-" for j in cols_j)]
            for i in rows_i
        ]
        parts += [
            "",
            "Spill-over (row: shortfall started in, column: notional closed in):",
            table(["", *(r.underlyings[j] for j in cols_j)], cells),
        ]
    amp = r.amplification
    by_u = ", ".join(f"{u} {a:.2f}" for u, a in r.amplification_by_underlying.items())
    amp_text = "n/a" if amp is None or not np.isfinite(amp) else f"{amp:.2f} ({by_u})"
    if r.stopped == "stable":
        stop = "no account fell in the last round"
    else:
        stop = f"round limit reached, {r.pending_accounts} more accounts liquidatable"
    parts += [
        "",
        f"accounts liquidated: {r.accounts_liquidated}",
        f"notional liquidated: {money(r.notional_liquidated)}",
        f"healthy notional destroyed: {money(r.healthy_notional_destroyed)}",
        f"bad debt: {money(r.bad_debt)}",
        f"amplification: {amp_text}",
        f"stopped: {stop}",
    ]
    return "\n".join(parts)
