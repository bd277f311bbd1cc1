"""Rows of the bench table and their rendering."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    value: float
    unit: str
    target: str = ""
    ok: bool | None = None


def render(rows: list[Row]) -> str:
    lines = [f"{'figure':<52} {'value':>14} {'unit':<9} {'target':<14} ok"]
    for r in rows:
        whole = isinstance(r.value, int) or abs(r.value) >= 1000  # counts print as such
        v = f"{r.value:,.0f}" if whole else f"{r.value:,.2f}"
        ok = "" if r.ok is None else ("yes" if r.ok else "NO")
        lines.append(f"{r.name:<52} {v:>14} {r.unit:<9} {r.target:<14} {ok}")
    return "\n".join(lines)
