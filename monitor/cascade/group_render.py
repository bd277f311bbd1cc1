"""Plain-text tables of the group view (``monitor stress --from-kafka``)."""

from __future__ import annotations

from monitor.cascade.group import Bound, GroupCascade
from monitor.cascade.partial import MergedMarket
from monitor.cascade.render import money, pct, table


def format_sources(merged: MergedMarket) -> str:
    lines = [
        f"Group view of {len(merged.instances)} instance(s): {', '.join(merged.instances)}; "
        f"partitions {list(merged.partitions)}"
    ]
    for inst, why in sorted(merged.left_out.items()):
        lines.append(f"left out: {inst} ({why})")
    return "\n".join(lines)


def format_group_cascade(results: dict[Bound, GroupCascade]) -> str:
    lower = results["lower"]
    shocked = lower.scenario.as_dict()
    moved = {u for r in results.values() for u, x in r.final_moves.items() if x != 0.0}
    unders = [u for u in lower.final_moves if u in shocked or u in moved]
    parts = [
        f"Group cascade: {lower.scenario.label} (impact {lower.impact.value}; an "
        "approximation from per-symbol partials, bracketed by two bounds)",
    ]
    for bound, r in results.items():
        rows = [
            [
                str(rd.round),
                str(rd.accounts),
                money(rd.notional),
                *(pct(rd.moves[u]) for u in unders),
            ]
            for rd in r.rounds
        ]
        rows.append(["final", "", "", *(pct(r.final_moves[u]) for u in unders)])
        amp = r.amplification
        parts += [
            "",
            f"{bound} bound: {r.accounts_liquidated} accounts, {money(r.notional_liquidated)} "
            f"liquidated, amplification {'n/a' if amp is None else f'{amp:.3f}'}"
            + (" (a move went past the grid: read at its end)" if r.beyond_grid else ""),
            table(["round", "accounts", "liquidated", *unders], rows),
        ]
    return "\n".join(parts)


__all__ = ["format_group_cascade", "format_sources"]
