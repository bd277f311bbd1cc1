"""A plain-Python, from-scratch evaluator: dictionaries and loops, one account at
a time, straight from DESIGN.md section 4.

It is the yardstick the incremental book is checked against (property tests)
and the "per-account re-evaluation loop" baseline of ``monitor bench``: the way
a liquidation-bot script typically does it. :meth:`ReferenceBook.evaluate`
gives the account figures; :meth:`ReferenceBook.report` every risk output of
``monitor evaluate`` (liquidation prices, contagion, distance to liquidation),
computed from the raw positions and balances alone, never from the book.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.events.schema import BalanceEvent, Event, PositionEvent, Tick
from monitor.instruments.model import Bracket, RiskParams
from monitor.risk.levels import Status, Thresholds, margin_ratio


@dataclass(slots=True)
class _Pos:
    qty: float
    entry: float
    mode: str
    iso_margin: float
    ts: int
    sub: str = ""


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
                    ev.qty,
                    ev.entry_price,
                    ev.margin_mode,
                    ev.isolated_margin,
                    ev.ts,
                    ev.sub_account,
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

    # ------------------------------------------------------------ full report
    def report(self, account: str) -> dict[str, Any]:
        """Every risk output of DESIGN.md section 4 for one account, in the shape of
        :func:`monitor.risk.report.account_report` (infinite figures as inf)."""
        acc = self.accounts[account]
        params = self.params
        wb = 0.0
        for name, (amount, _) in acc.balances.items():
            haircut = params.assets[params.asset_id[name]].haircut
            wb += amount * self.asset_price(name) * (1.0 - haircut)
        rows: dict[str, dict[str, Any]] = {}
        upnl = mm = 0.0
        for symbol in sorted(acc.positions):
            p = acc.positions[symbol]
            m = self.mark(symbol, p.entry)
            notional = abs(p.qty) * m
            b = params.instrument(symbol).bracket_for(notional)
            pu = p.qty * (m - p.entry)
            pmm = notional * b.mmr - b.cum
            rows[symbol] = {
                "symbol": symbol,
                "sub_account": p.sub,
                "margin_mode": p.mode,
                "qty": p.qty,
                "entry_price": p.entry,
                "mark_price": m,
                "notional": notional,
                "unrealized_pnl": pu,
                "mmr": b.mmr,
                "maintenance_amount": b.cum,
                "maintenance_margin": pmm,
                "healthy": pu >= 0.0 if p.mode == "cross" else None,
            }
            if p.mode == "cross":
                upnl += pu
                mm += pmm
        cross = [r for r in rows.values() if r["margin_mode"] == "cross"]
        for r in rows.values():
            brackets = params.instrument(r["symbol"]).brackets
            q, e = r["qty"], r["entry_price"]
            if r["margin_mode"] == "cross":
                others_mm = sum(o["maintenance_margin"] for o in cross if o is not r)
                others_upnl = sum(o["unrealized_pnl"] for o in cross if o is not r)
                lp = _liquidation_price(q, e, wb, others_mm, others_upnl, brackets)
                solo = _liquidation_price(q, e, wb, 0.0, 0.0, brackets)
            else:
                iso = acc.positions[r["symbol"]].iso_margin
                lp = solo = _liquidation_price(q, e, iso, 0.0, 0.0, brackets)
                ratio = margin_ratio(r["maintenance_margin"], iso + r["unrealized_pnl"], True)
                r["isolated_margin"] = iso
                r["margin_ratio"] = ratio
                r["status"] = self.thresholds.level(ratio).label
            r["liquidation_price"] = lp
            r["standalone_liquidation_price"] = solo
            r["contagion_shift"] = None if lp is None or solo is None else lp - solo
        equity = wb + upnl
        ratio = margin_ratio(mm, equity, bool(cross))
        status = self.thresholds.level(ratio)
        losers = sorted((r for r in cross if not r["healthy"]), key=lambda r: r["unrealized_pnl"])
        by_sub: dict[str, float] = {}
        for r in losers:
            by_sub[r["sub_account"]] = by_sub.get(r["sub_account"], 0.0) + r["unrealized_pnl"]
        victims = (
            sorted((r for r in cross if r["healthy"]), key=lambda r: -r["notional"])
            if status >= Status.WARNING
            else []
        )
        return {
            "account": account,
            "wallet_balance": wb,
            "unrealized_pnl": upnl,
            "equity": equity,
            "maintenance_margin": mm,
            "margin_ratio": ratio,
            "status": status.label,
            "balances": {k: v for k, (v, _) in acc.balances.items()},
            "positions": [rows[s] for s in sorted(rows)],
            "contagion": {
                "healthy_notional_at_risk": sum(v["notional"] for v in victims),
                "culprits": [
                    {"symbol": r["symbol"], "sub_account": r["sub_account"],
                     "unrealized_pnl": r["unrealized_pnl"]}
                    for r in losers
                ],
                "culprit_sub_accounts": [
                    {"sub_account": k, "unrealized_pnl": v}
                    for k, v in sorted(by_sub.items(), key=lambda kv: kv[1])
                ],
                "victims": [
                    {"symbol": r["symbol"], "sub_account": r["sub_account"],
                     "notional": r["notional"], "unrealized_pnl": r["unrealized_pnl"],
                     "liquidation_price": r["liquidation_price"],
                     "contagion_shift": r["contagion_shift"]}
                    for r in victims
                ],
            },
            "distance_to_liquidation": self.distances(account),
        }  # fmt: skip

    def liquidation_gap(self, account: str, underlying: str, x: float) -> float:
        """``E - MM / L`` of the account's cross part with every instrument and
        collateral asset on ``underlying`` moved by the relative move ``x``: the
        account is liquidatable where this is <= 0."""
        acc = self.accounts[account]
        params = self.params
        e = mm = 0.0
        for name, (amount, _) in acc.balances.items():
            a = params.assets[params.asset_id[name]]
            price = self.asset_price(name) * (1.0 + x if a.underlying == underlying else 1.0)
            e += amount * price * (1.0 - a.haircut)
        for symbol, p in acc.positions.items():
            if p.mode != "cross":
                continue
            inst = params.instrument(symbol)
            m = self.mark(symbol, p.entry) * (1.0 + x if inst.underlying == underlying else 1.0)
            notional = abs(p.qty) * m
            b = inst.bracket_for(notional)
            e += p.qty * (m - p.entry)
            mm += notional * b.mmr - b.cum
        return e - mm / self.thresholds.liquidatable

    def distances(self, account: str) -> dict[str, dict[str, float | None]]:
        """Distance to liquidation per underlying the cross part is exposed to: the
        first move, outwards from 0, where :meth:`liquidation_gap` reaches 0 (it is
        linear between the moves where a position's notional crosses a floor)."""
        acc = self.accounts[account]
        params = self.params
        cross = {s: p for s, p in acc.positions.items() if p.mode == "cross"}
        if not cross:
            return {}
        unders = {params.instrument(s).underlying for s in cross}
        for name, (amount, _) in acc.balances.items():
            u = params.assets[params.asset_id[name]].underlying
            if u is not None and amount != 0.0:
                unders.add(u)
        out: dict[str, dict[str, float | None]] = {}
        for u in sorted(unders):
            kinks: set[float] = set()
            on_u = [s for s in cross if params.instrument(s).underlying == u]
            top = max((self.mark(s, cross[s].entry) for s in on_u), default=1.0)
            for s in on_u:
                p = cross[s]
                n0 = abs(p.qty) * self.mark(s, p.entry)
                if n0 > 0.0:
                    kinks.update(b.floor / n0 - 1.0 for b in params.instrument(s).brackets[1:])
            # moves that take a mark beyond the float range are no kinks
            kinks = {k for k in kinks if math.isfinite(top * (1.0 + k))}
            g0 = self.liquidation_gap(account, u, 0.0)
            if g0 <= 0.0:
                out[u] = {"down": 0.0, "up": 0.0}
                continue
            down_pts = [*sorted((k for k in kinks if -1.0 < k < 0.0), reverse=True), -1.0]
            up_pts = sorted(k for k in kinks if k > 0.0)
            out[u] = {
                "down": self._first_zero(account, u, g0, down_pts, None),
                "up": self._first_zero(account, u, g0, up_pts, 1.0),
            }
        return out

    def _first_zero(
        self, account: str, u: str, g0: float, pts: list[float], beyond: float | None
    ) -> float | None:
        xa, ga = 0.0, g0
        for xb in pts:
            gb = self.liquidation_gap(account, u, xb)
            if gb <= 0.0:
                return xa + (xb - xa) * ga / (ga - gb)
            xa, ga = xb, gb
        if beyond is None:
            return None
        # past the last floor the gap is linear: does it fall, and where to zero?
        d = self.gap_slope(account, u, xa + beyond)
        if not d < 0.0:
            return None
        x = xa + ga / -d
        return x if math.isfinite(x) else None

    def gap_slope(self, account: str, underlying: str, x: float) -> float:
        """d/dx of :meth:`liquidation_gap` where no position crosses a floor."""
        acc = self.accounts[account]
        params = self.params
        d = 0.0
        for name, (amount, _) in acc.balances.items():
            a = params.assets[params.asset_id[name]]
            if a.underlying == underlying:
                d += amount * self.asset_price(name) * (1.0 - a.haircut)
        for symbol, p in acc.positions.items():
            inst = params.instrument(symbol)
            if p.mode != "cross" or inst.underlying != underlying:
                continue
            m = self.mark(symbol, p.entry)
            b = inst.bracket_for(abs(p.qty) * m * (1.0 + x))
            d += p.qty * m - abs(p.qty) * m * b.mmr / self.thresholds.liquidatable
        return d


def _liquidation_price(
    qty: float,
    entry: float,
    wallet: float,
    other_mm: float,
    other_upnl: float,
    brackets: Sequence[Bracket],
) -> float | None:
    """DESIGN.md section 4, solved per bracket: the solution whose own notional
    falls in that bracket; None without a positive one."""
    side = 1.0 if qty > 0 else -1.0
    q = abs(qty)
    for k, b in enumerate(brackets):
        denom = q * b.mmr - side * q
        if denom == 0.0:
            continue
        lp = (wallet - other_mm + other_upnl + b.cum - side * q * entry) / denom
        if not (lp > 0.0 and math.isfinite(lp)):
            continue
        upper = brackets[k + 1].floor if k + 1 < len(brackets) else math.inf
        if b.floor <= q * lp * (1 + 1e-12) and q * lp < upper * (1 + 1e-12):
            return lp
    return None


def isclose(a: float, b: float) -> bool:
    """Equal to 1e-9 relative, or to a millionth of a unit near zero."""
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
