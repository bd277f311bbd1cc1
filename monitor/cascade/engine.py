"""The liquidation cascade: shock prices, close every liquidatable account,
turn the forced flow into price impact, re-evaluate, repeat.

Rounds. Round 0 evaluates the book at the shocked prices (every instrument
and collateral asset on a shocked underlying moved by its shock). In each
round every surviving account whose cross part is liquidatable
(``MM >= E``, the venue's ``MR >= 1``) has all its cross positions closed at
the round's marks, and the signed forced flow per symbol (net buying:
closing a long sells, negative; closing a short buys back, positive) is
added up. The price for the next round is the shocked price moved by the
impact model (:mod:`monitor.cascade.impact`) applied to the forced flow of
all rounds so far: round 0's flow moves the price by exactly the model's
figure, and the impact of a given amount of selling does not depend on how
many rounds it was spread over (per-round compounding would make the
square-root model, being concave, penalise a cascade for falling in small
steps, and a bigger shock could then liquidate fewer accounts). The cascade
stops when a round liquidates nobody or after ``max_rounds`` rounds; round 0
is always reported, later rounds only when someone falls.

Collateral. A collateral asset on an underlying moves with that
underlying's *reference instrument* (the first instrument on it in the
instruments file), or only with the shock when the underlying has no
instrument. The same reference gives each underlying's move, used for the
amplification: ``final move / shock`` for each shocked underlying; the
scenario's amplification is the largest of them.

Attribution. A liquidated account's shortfall *started in* the underlying
where it lost the most: per underlying, the uPnL of its losing cross
positions (culprits, DESIGN.md section 4) plus the fall in value of its
collateral on that underlying since the snapshot, and the most negative sum
wins (ties: the first underlying in the instruments file). An account that
lost nothing anywhere (liquidated by maintenance alone) is attributed to the
underlying carrying most of its maintenance margin. The spill-over matrix
``spillover[i, j]`` is the notional closed in underlying ``j`` by accounts whose
shortfall started in ``i``; off the diagonal is contagion across underlyings.

Also per round: *healthy notional destroyed*, the notional of closed
positions that were not losing (uPnL >= 0: victims), and *bad debt*, the
negative equity the liquidated accounts leave behind.

Everything is vectorised over the snapshot's arrays (``np.bincount`` per
account and per symbol); a round re-values only the symbols whose price
moved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from monitor.cascade.impact import ImpactModel, instrument_depths, price_moves
from monitor.cascade.shocks import Scenario
from monitor.cascade.snapshot import BookSnapshot, liquidatable, slice_maintenance, sums
from monitor.instruments.model import RiskParams
from monitor.risk.report import finite

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

Stop = Literal["stable", "max_rounds"]


@dataclass(frozen=True, eq=False)
class CascadeRound:
    """One round: the marks it liquidated at, who fell, what it closed."""

    round: int
    prices: dict[str, float | None]  # marks of every symbol during the round
    moves: dict[str, float]  # cumulative move of each underlying since the snapshot
    accounts: I64  # slots of the accounts liquidated in this round
    notional_liquidated: dict[str, float]  # per instrument
    forced_flow: dict[str, float]  # per instrument, signed as buying
    healthy_notional_destroyed: dict[str, float]  # per instrument
    bad_debt: float
    spillover: F64  # (underlyings, underlyings)
    price_impact: dict[str, float]  # relative move from this round's marks to the next's

    @property
    def accounts_liquidated(self) -> int:
        return int(self.accounts.shape[0])

    @property
    def total_notional(self) -> float:
        return float(sum(self.notional_liquidated.values()))

    @property
    def total_healthy_destroyed(self) -> float:
        return float(sum(self.healthy_notional_destroyed.values()))


@dataclass(frozen=True, eq=False)
class CascadeResult:
    scenario: Scenario
    impact: ImpactModel
    max_rounds: int
    underlyings: tuple[str, ...]
    rounds: tuple[CascadeRound, ...]
    initial_prices: dict[str, float | None]
    final_prices: dict[str, float | None]
    final_moves: dict[str, float]
    stopped: Stop
    pending_accounts: int  # still liquidatable at the final prices (when stopped by the limit)
    account_ids: Sequence[str] = field(repr=False)  # the snapshot's, to name the accounts

    @property
    def accounts_liquidated(self) -> int:
        return sum(r.accounts_liquidated for r in self.rounds)

    @property
    def notional_liquidated(self) -> float:
        return float(sum(r.total_notional for r in self.rounds))

    @property
    def healthy_notional_destroyed(self) -> float:
        return float(sum(r.total_healthy_destroyed for r in self.rounds))

    @property
    def bad_debt(self) -> float:
        return float(sum(r.bad_debt for r in self.rounds))

    @property
    def spillover(self) -> F64:
        n = len(self.underlyings)
        out: F64 = sum((r.spillover for r in self.rounds), np.zeros((n, n)))
        return out

    @property
    def amplification_by_underlying(self) -> dict[str, float]:
        return {u: self.final_moves[u] / x for u, x in self.scenario.moves if x != 0.0}

    @property
    def amplification(self) -> float | None:
        """``final move / shock``, the largest over the shocked underlyings."""
        amps = self.amplification_by_underlying
        return max(amps.values()) if amps else None

    def to_json(self, *, with_accounts: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "shocks": self.scenario.as_dict(),
            "impact": self.impact.value,
            "max_rounds": self.max_rounds,
            "rounds": [self._round_json(r, with_accounts) for r in self.rounds],
            "stopped": self.stopped,
            "pending_accounts": self.pending_accounts,
            "initial_prices": self.initial_prices,
            "final_prices": self.final_prices,
            "final_moves": self.final_moves,
            "amplification": finite(self.amplification),
            "amplification_by_underlying": self.amplification_by_underlying,
            "accounts_liquidated": self.accounts_liquidated,
            "notional_liquidated": self.notional_liquidated,
            "healthy_notional_destroyed": self.healthy_notional_destroyed,
            "bad_debt": self.bad_debt,
            "spillover": self._matrix_json(self.spillover),
        }
        return out

    def _round_json(self, r: CascadeRound, with_accounts: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "round": r.round,
            "prices": r.prices,
            "moves": r.moves,
            "accounts_liquidated": r.accounts_liquidated,
            "notional_liquidated": r.notional_liquidated,
            "forced_flow": r.forced_flow,
            "healthy_notional_destroyed": r.healthy_notional_destroyed,
            "bad_debt": r.bad_debt,
            "spillover": self._matrix_json(r.spillover),
            "price_impact": r.price_impact,
        }
        if with_accounts:
            out["accounts"] = [self.account_ids[int(a)] for a in r.accounts]
        return out

    def _matrix_json(self, m: F64) -> dict[str, dict[str, float]]:
        """``{started in: {closed in: notional}}``, non-zero cells only."""
        u = self.underlyings
        return {
            u[i]: {u[j]: float(m[i, j]) for j in range(len(u)) if m[i, j] != 0.0}
            for i in range(len(u))
            if np.any(m[i] != 0.0)
        }


def reference_instruments(params: RiskParams) -> I64:
    """Per underlying, its first instrument (-1 for a collateral-only underlying)."""
    ref = np.full(len(params.underlyings), -1, dtype=np.int64)
    for s in range(params.n_instruments - 1, -1, -1):
        ref[int(params.sym_underlying[s])] = s
    return ref


class _Prices:
    """Cumulative price factors: per instrument, per underlying, per asset."""

    def __init__(self, params: RiskParams, shock: F64) -> None:
        self.params = params
        self.shock = shock
        self.ref = reference_instruments(params)
        self.shocked = 1.0 + shock[params.sym_underlying[: params.n_instruments]]
        self.inst = self.shocked.copy()

    def underlying(self) -> F64:
        ref = self.ref
        out: F64 = np.where(ref >= 0, self.inst[np.maximum(ref, 0)], 1.0 + self.shock)
        return out

    def asset(self) -> F64:
        au = self.params.asset_underlying
        out: F64 = np.where(au >= 0, self.underlying()[np.maximum(au, 0)], 1.0)
        return out

    def symbols(self, base: F64) -> dict[str, float | None]:
        p = self.params
        f = np.ones(len(p.symbols))
        f[: p.n_instruments] = self.inst
        af = self.asset()
        for k in range(len(p.assets)):
            s = int(p.asset_price_sym[k])
            if s >= p.n_instruments:
                f[s] = af[k]
        return {name: finite(float(base[s] * f[s])) for s, name in enumerate(p.symbols)}


def run_cascades(
    snap: BookSnapshot,
    scenarios: Sequence[Scenario],
    *,
    impact: ImpactModel | str = ImpactModel.LINEAR,
    max_rounds: int = 10,
) -> dict[str, CascadeResult]:
    """:func:`run_cascade` of each scenario, by its label."""
    return {
        sc.label: run_cascade(snap, sc, impact=impact, max_rounds=max_rounds) for sc in scenarios
    }


def run_cascade(
    snap: BookSnapshot,
    scenario: Scenario | Mapping[str, float],
    *,
    impact: ImpactModel | str = ImpactModel.LINEAR,
    max_rounds: int = 10,
) -> CascadeResult:
    """Run the cascade a scenario sets off on a snapshot (which is not modified)."""
    if not isinstance(scenario, Scenario):
        scenario = Scenario(tuple(scenario.items()))
    model = impact if isinstance(impact, ImpactModel) else ImpactModel.parse(impact)
    if max_rounds < 1:
        raise ValueError("max_rounds must be >= 1")
    return _Cascade(snap, scenario, model).run(max_rounds)


class _Cascade:
    def __init__(self, snap: BookSnapshot, scenario: Scenario, model: ImpactModel) -> None:
        p = snap.params
        self.snap, self.scenario, self.model, self.p = snap, scenario, model, p
        self.n = snap.n_accounts
        self.bounds = snap.bounds
        shock = np.zeros(len(p.underlyings))
        for name, x in scenario.moves:
            if name not in p.underlyings:
                raise ValueError(f"unknown underlying {name!r} (known: {', '.join(p.underlyings)})")
            shock[p.underlyings.index(name)] = x
        self.prices = _Prices(p, shock)
        self.depth, self.k = instrument_depths(p)
        self.flow = np.zeros(p.n_instruments)  # cumulative forced flow per instrument
        self.under = p.sym_underlying[: p.n_instruments]
        # Position state; closed positions get qty 0 (so zero notional, uPnL, MM).
        self.qty = snap.qty.copy()
        self.notional = np.zeros_like(self.qty)
        self.upnl = np.zeros_like(self.qty)
        self.mm = np.zeros_like(self.qty)
        self.alive = np.bincount(snap.acct, minlength=self.n) > 0
        self.w0 = snap.collateral_weights()

    def _revalue(self, syms: I64) -> None:
        snap, inst = self.snap, self.prices.inst
        for s in syms:
            lo, hi = int(self.bounds[s]), int(self.bounds[s + 1])
            if lo == hi:
                continue
            m = snap.mark[lo:hi] * inst[s]
            q = self.qty[lo:hi]
            n = np.abs(q) * m
            self.notional[lo:hi] = n
            self.upnl[lo:hi] = q * (m - snap.entry[lo:hi])
            self.mm[lo:hi] = slice_maintenance(self.p, int(s), n)

    def _equity_mm(self) -> tuple[F64, F64]:
        acct = self.snap.acct
        wallet = (self.w0 * self.prices.asset()) @ self.snap.bal
        equity = wallet + sums(acct, self.upnl, self.n)
        return equity, sums(acct, self.mm, self.n)

    def _liquidatable(self) -> tuple[I64, F64]:
        equity, mm = self._equity_mm()
        liq = np.flatnonzero(liquidatable(mm, equity, self.alive))
        return liq, equity

    def run(self, max_rounds: int) -> CascadeResult:
        p, snap = self.p, self.snap
        initial = _Prices(p, np.zeros(len(p.underlyings))).symbols(snap.sym_price)
        self._revalue(np.arange(p.n_instruments))
        rounds: list[CascadeRound] = []
        stopped: Stop = "stable"
        pending = 0
        for r in range(max_rounds + 1):
            liq, equity = self._liquidatable()
            if r == max_rounds:
                pending = int(liq.shape[0])
                stopped = "max_rounds" if pending else "stable"
                break
            if liq.shape[0] == 0 and r > 0:
                break
            rnd, moves = self._round(r, liq, equity)
            rounds.append(rnd)
            if liq.shape[0] == 0:
                break
            self._revalue(np.flatnonzero(moves != 0.0))
        under = self.prices.underlying() - 1.0
        return CascadeResult(
            scenario=self.scenario,
            impact=self.model,
            max_rounds=max_rounds,
            underlyings=p.underlyings,
            rounds=tuple(rounds),
            initial_prices=initial,
            final_prices=self.prices.symbols(snap.sym_price),
            final_moves={u: float(under[k]) for k, u in enumerate(p.underlyings)},
            stopped=stopped,
            pending_accounts=pending,
            account_ids=snap.account_ids,
        )

    def _round(self, r: int, liq: I64, equity: F64) -> tuple[CascadeRound, F64]:
        p, snap = self.p, self.snap
        n_instr, n_u = p.n_instruments, len(p.underlyings)
        falling = np.zeros(self.n, dtype=bool)
        falling[liq] = True
        closed = np.flatnonzero(falling[snap.acct])
        sym = snap.sym[closed]
        notional = self.notional[closed]
        upnl = self.upnl[closed]
        flow = -np.sign(self.qty[closed]) * notional
        by_sym = sums(sym, notional, n_instr)
        flow_sym = sums(sym, flow, n_instr)
        healthy = sums(sym, np.where(upnl >= 0.0, notional, 0.0), n_instr)
        spill = self._spillover(liq, closed)
        under_now = self.prices.underlying() - 1.0
        prices = self.prices.symbols(snap.sym_price)
        # Impact of all the forced flow so far, on top of the shock.
        self.flow += flow_sym
        before = self.prices.inst.copy()
        self.prices.inst = self.prices.shocked * (
            1.0 + price_moves(self.model, self.flow, self.depth, self.k)
        )
        moves = self.prices.inst / before - 1.0
        rnd = CascadeRound(
            round=r,
            prices=prices,
            moves={u: float(under_now[k]) for k, u in enumerate(p.underlyings)},
            accounts=liq,
            notional_liquidated=self._per_symbol(by_sym),
            forced_flow=self._per_symbol(flow_sym),
            healthy_notional_destroyed=self._per_symbol(healthy),
            bad_debt=float(np.maximum(-equity[liq], 0.0).sum()),
            spillover=spill.reshape(n_u, n_u),
            price_impact=self._per_symbol(moves),
        )
        # Close: the accounts leave the book, their positions stop counting.
        self.alive[liq] = False
        for arr in (self.qty, self.notional, self.upnl, self.mm):
            arr[closed] = 0.0
        return rnd, moves

    def _spillover(self, liq: I64, closed: I64) -> F64:
        p, snap = self.p, self.snap
        n_u = len(p.underlyings)
        nl = liq.shape[0]
        if nl == 0:
            return np.zeros(n_u * n_u)
        cidx = np.searchsorted(liq, snap.acct[closed])  # liq is ascending
        under = self.under[snap.sym[closed]]
        cell = cidx * n_u + under
        loss = sums(cell, np.minimum(self.upnl[closed], 0.0), nl * n_u)
        loss = loss.reshape(nl, n_u)
        # Collateral value lost on each underlying since the snapshot.
        au = p.asset_underlying
        change = np.zeros((nl, n_u))
        af = self.prices.asset()
        for k in np.flatnonzero(au >= 0):
            change[:, au[k]] += snap.bal[k, liq] * self.w0[k] * (af[k] - 1.0)
        loss += np.minimum(change, 0.0)
        origin = np.argmin(loss, axis=1)
        no_loss = loss.min(axis=1) >= 0.0
        if no_loss.any():
            mm = sums(cell, self.mm[closed], nl * n_u).reshape(nl, n_u)
            origin[no_loss] = np.argmax(mm[no_loss], axis=1)
        return sums(origin[cidx] * n_u + under, self.notional[closed], n_u * n_u)

    def _per_symbol(self, v: F64) -> dict[str, float]:
        return {self.p.symbols[s]: float(v[s]) for s in range(self.p.n_instruments)}
