"""The cascade of the whole group, from the merged partials (an approximation).

The exact cascade (:mod:`monitor.cascade.engine`) re-values every account at
every round's prices; with the accounts spread over several instances nobody
holds them all. The merged partials (:mod:`monitor.cascade.partial`) hold, per
underlying ``u`` and grid move ``g``, the forced flow of the accounts that a
move of ``u`` alone by ``g`` liquidates. The group cascade runs the same
rounds on those curves:

- round 0: each underlying at its shock; each later round: the underlyings
  where the impact of the forced flow so far (on top of the shock, as in the
  exact cascade) has moved their reference instrument;
- each underlying's move is read on its curve at a grid point; the forced flow
  of the round is the curves' flow at those points, and the price impact is
  the same model with the same per-instrument depths as the exact cascade;
- it stops when the flow no longer grows, or at the round limit.

What is approximated, and how the two bounds bracket it:

- *grid*: a move between grid points is read at the grid point inside it
  (``lower``) or outside it (``upper``); a move beyond the grid's end is read at
  the end and flagged;
- *several underlyings moving at once*: an account is judged on each
  underlying's move alone. Accounts that only a combination of moves liquidates
  are missed; an account liquidated by the moves of two underlyings appears in
  both curves. ``lower`` takes the single largest underlying's set (by
  notional); ``upper`` adds the sets of every moving underlying (double
  counting such accounts). For a shock confined to one underlying whose forced
  flow stays on it, the two bounds differ by the grid rounding only;
- the closed positions are valued at the round's prices (their quantity at the
  partials' marks times the instrument's price factor), as in the exact
  cascade; bad debt, healthy notional destroyed and the spill-over matrix need
  per-account data and are not available here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from monitor.cascade.engine import reference_instruments
from monitor.cascade.impact import ImpactModel, instrument_depths, price_moves
from monitor.cascade.partial import MergedMarket
from monitor.cascade.shocks import Scenario
from monitor.instruments.model import RiskParams

F64 = npt.NDArray[np.float64]
Bound = Literal["lower", "upper"]


@dataclass(frozen=True, slots=True)
class GroupRound:
    round: int
    moves: dict[str, float]  # underlying moves this round is read at
    accounts: int  # accounts liquidated (cumulative), under the bound
    notional: float  # notional liquidated (cumulative), under the bound
    forced_flow: dict[str, float]  # cumulative, per instrument, signed as buying


@dataclass(frozen=True, slots=True)
class GroupCascade:
    scenario: Scenario
    bound: Bound
    impact: ImpactModel
    instances: tuple[str, ...]
    rounds: tuple[GroupRound, ...]
    final_moves: dict[str, float]
    beyond_grid: bool  # some move went past the grid's end (read at the end)

    @property
    def accounts_liquidated(self) -> int:
        return self.rounds[-1].accounts if self.rounds else 0

    @property
    def notional_liquidated(self) -> float:
        return self.rounds[-1].notional if self.rounds else 0.0

    @property
    def bad_debt(self) -> float:
        return math.nan  # needs per-account equity: only the exact cascade has it

    @property
    def healthy_notional_destroyed(self) -> float:
        return math.nan  # needs per-position uPnL: only the exact cascade has it

    @property
    def amplification(self) -> float | None:
        amps = [self.final_moves[u] / x for u, x in self.scenario.moves if x != 0.0]
        return max(amps) if amps else None

    def to_json(self) -> dict[str, Any]:
        return {
            "shocks": self.scenario.as_dict(),
            "bound": self.bound,
            "impact": self.impact.value,
            "instances": list(self.instances),
            "rounds": [
                {
                    "round": r.round,
                    "moves": r.moves,
                    "accounts_liquidated": r.accounts,
                    "notional_liquidated": r.notional,
                    "forced_flow": r.forced_flow,
                }
                for r in self.rounds
            ],
            "final_moves": self.final_moves,
            "amplification": self.amplification,
            "accounts_liquidated": self.accounts_liquidated,
            "notional_liquidated": self.notional_liquidated,
            "beyond_grid": self.beyond_grid,
        }


def _grid_index(grid: F64, move: float, bound: Bound) -> tuple[int | None, bool]:
    """Where a move is read on the grid: ``(index or None for "nothing", beyond)``."""
    if move == 0.0:
        hit = np.flatnonzero(grid == 0.0)
        return (int(hit[0]) if hit.size else None), False
    side = np.flatnonzero(grid < 0.0) if move < 0.0 else np.flatnonzero(grid > 0.0)
    if side.size == 0:
        return None, True
    g = np.abs(grid[side])  # ascending for the up side, descending for the down side
    order = np.argsort(g)
    g, side = g[order], side[order]
    x = abs(move)
    beyond = x > g[-1] + 1e-12
    if bound == "lower":
        k = int(np.searchsorted(g, x + 1e-12, side="right")) - 1
        return (int(side[k]) if k >= 0 else None), beyond
    k = int(np.searchsorted(g, x - 1e-12, side="left"))
    return int(side[min(k, side.size - 1)]), beyond


def group_cascade(
    merged: MergedMarket,
    params: RiskParams,
    scenario: Scenario,
    *,
    bound: Bound = "lower",
    impact: ImpactModel | str = ImpactModel.LINEAR,
    max_rounds: int = 10,
) -> GroupCascade:
    """The cascade a scenario sets off in the merged book, under one bound."""
    model = impact if isinstance(impact, ImpactModel) else ImpactModel.parse(impact)
    if tuple(params.symbols[: params.n_instruments]) != merged.symbols:
        raise ValueError("the partials were computed with other instruments")
    m = merged.map
    unders = m.underlyings
    grid = m.moves
    n_u = len(unders)
    shock = np.zeros(n_u)
    for name, x in scenario.moves:
        if name not in unders:
            raise ValueError(f"unknown underlying {name!r} (known: {', '.join(unders)})")
        shock[unders.index(name)] = x
    under_of = params.sym_underlying[: params.n_instruments]
    ref = reference_instruments(params)
    depth, k = instrument_depths(params)
    shocked = 1.0 + shock[under_of]
    inst = shocked.copy()
    n_s = params.n_instruments
    flow = np.zeros(n_s)  # cumulative forced flow, each round's part at its prices
    notional = 0.0
    read_flow = np.zeros(n_s)  # the curves' cumulative flow and gross, at the marks
    read_gross = np.zeros(n_s)
    rounds: list[GroupRound] = []
    beyond = False
    prev_accounts = -1
    for r in range(max_rounds + 1):
        moves = np.where(ref >= 0, inst[np.maximum(ref, 0)] - 1.0, shock)
        picked: list[tuple[int, F64, F64]] = []
        for u in range(n_u):
            j, out = _grid_index(grid, float(moves[u]), bound)
            beyond |= out and moves[u] != 0.0
            if j is not None and moves[u] != 0.0:
                picked.append((int(m.accounts[u, j]), merged.flow[u, j], merged.gross[u, j]))
        if not picked:
            accounts, f, g = 0, np.zeros(n_s), np.zeros(n_s)
        elif bound == "lower":
            accounts, f, g = max(picked, key=lambda t: float(t[2].sum()))
        else:
            accounts = sum(t[0] for t in picked)
            f = np.sum([t[1] for t in picked], axis=0)
            g = np.sum([t[2] for t in picked], axis=0)
        if (accounts <= prev_accounts and r > 0) or r == max_rounds:
            break  # nobody new falls (liquidations are not undone): the flow is final
        # Those who fell since the last reading close at this round's prices (their
        # quantity at the marks times the price factor), as in the exact cascade.
        flow = flow + (f - read_flow) * inst
        notional += float(np.maximum(g - read_gross, 0.0) @ inst)
        read_flow, read_gross = f, np.maximum(g, read_gross)
        prev_accounts = accounts
        rounds.append(GroupRound(
            round=r,
            moves={u: float(moves[i]) for i, u in enumerate(unders)},
            accounts=accounts,
            notional=notional,
            forced_flow={params.symbols[s]: float(flow[s]) for s in range(n_s)},
        ))  # fmt: skip
        inst = shocked * (1.0 + price_moves(model, flow, depth, k))
    final = np.where(ref >= 0, inst[np.maximum(ref, 0)] - 1.0, shock)
    return GroupCascade(
        scenario=scenario,
        bound=bound,
        impact=model,
        instances=merged.instances,
        rounds=tuple(rounds),
        final_moves={u: float(final[i]) for i, u in enumerate(unders)},
        beyond_grid=bool(beyond),
    )


__all__ = ["Bound", "GroupCascade", "GroupRound", "group_cascade"]
