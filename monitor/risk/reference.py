"""A plain-Python, from-scratch evaluator: dictionaries and loops, one account at
a time, straight from DESIGN.md section 4.

It is the yardstick the incremental book is checked against (property tests)
and the "per-account re-evaluation loop" baseline of ``monitor bench``: the way
a liquidation-bot script typically does it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from monitor.events.schema import BalanceEvent, Event, PositionEvent, Tick
from monitor.instruments.model import RiskParams
from monitor.risk.levels import Status, Thresholds, margin_ratio


@dataclass(slots=True)
class _Pos:
    qty: float
    entry: float
    mode: str
    iso_margin: float
    ts: int


@dataclass(slots=True)
class _Account:
    positions: dict[str, _Pos] = field(default_factory=dict)
    balances: dict[str, tuple[float, int]] = field(default_factory=dict)
    closed_ts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RefPosition:
    unrealized_pnl: float
    maintenance_margin: float
    notional: float
    status: Status  # isolated positions only (HEALTHY for cross)


@dataclass(frozen=True, slots=True)
class RefAccount:
    wallet_balance: float
    unrealized_pnl: float
    maintenance_margin: float
    equity: float
    margin_ratio: float
    status: Status
    positions: dict[str, RefPosition]


class ReferenceBook:
    def __init__(self, params: RiskParams, thresholds: Thresholds | None = None) -> None:
        self.params = params
        self.thresholds = thresholds or Thresholds()
        self.prices: dict[str, tuple[float, int]] = {}
        self.accounts: dict[str, _Account] = {}

    def apply(self, ev: Event) -> bool:
        """Apply one validated event; False when it is stale (older than the state)."""
        if isinstance(ev, Tick):
            held = self.prices.get(ev.symbol)
            if held is not None and ev.ts < held[1]:
                return False
            self.prices[ev.symbol] = (ev.price, ev.ts)
            return True
        acc = self.accounts.setdefault(ev.account, _Account())
        if isinstance(ev, PositionEvent):
            cur = acc.positions.get(ev.symbol)
            if cur is not None and ev.ts < cur.ts:
                return False
            if ev.symbol in acc.closed_ts and ev.ts < acc.closed_ts[ev.symbol]:
                return False
            if ev.qty == 0.0:
                acc.positions.pop(ev.symbol, None)
                acc.closed_ts[ev.symbol] = ev.ts
            else:
                acc.positions[ev.symbol] = _Pos(
                    ev.qty, ev.entry_price, ev.margin_mode, ev.isolated_margin, ev.ts
                )
                acc.closed_ts.pop(ev.symbol, None)
            return True
        assert isinstance(ev, BalanceEvent)
        held_b = acc.balances.get(ev.asset)
        if held_b is not None and ev.ts < held_b[1]:
            return False
        acc.balances[ev.asset] = (ev.amount, ev.ts)
        return True

    def asset_price(self, name: str) -> float:
        a = self.params.assets[self.params.asset_id[name]]
        if a.price_symbol is not None and a.price_symbol in self.prices:
            return self.prices[a.price_symbol][0]
        return a.price if a.price is not None else 0.0

    def mark(self, symbol: str, entry: float) -> float:
        held = self.prices.get(symbol)
        return entry if held is None else held[0]

    def evaluate(self, account: str) -> RefAccount:
        acc = self.accounts[account]
        wb = 0.0
        for name, (amount, _) in acc.balances.items():
            haircut = self.params.assets[self.params.asset_id[name]].haircut
            wb += amount * self.asset_price(name) * (1.0 - haircut)
        upnl = 0.0
        mm = 0.0
        positions: dict[str, RefPosition] = {}
        for symbol, p in acc.positions.items():
            inst = self.params.instrument(symbol)
            m = self.mark(symbol, p.entry)
            notional = abs(p.qty) * m
            b = inst.bracket_for(notional)
            pmm = notional * b.mmr - b.cum
            pu = p.qty * (m - p.entry)
            status = Status.HEALTHY
            if p.mode == "cross":
                upnl += pu
                mm += pmm
            else:
                status = self.thresholds.level(margin_ratio(pmm, p.iso_margin + pu, True))
            positions[symbol] = RefPosition(pu, pmm, notional, status)
        eq = wb + upnl
        has = any(p.mode == "cross" for p in acc.positions.values())
        mr = margin_ratio(mm, eq, has)
        return RefAccount(wb, upnl, mm, eq, mr, self.thresholds.level(mr), positions)

    def evaluate_all(self) -> dict[str, RefAccount]:
        return {a: self.evaluate(a) for a in self.accounts}


def isclose(a: float, b: float) -> bool:
    """Equal to 1e-9 relative, or to a millionth of a unit near zero."""
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
