"""The liquidation map: per underlying, the notional (and number of accounts)
liquidatable at each move of that underlying, from each account's distance to
liquidation rather than by re-running the book per grid point.

Distance to liquidation (DESIGN.md section 4), vectorised over accounts. For
one underlying, write ``t = 1 + x`` for its relative move ``x``. An account's
equity minus maintenance margin is

    f(t) = F + coll * t + sum over legs of [q*m*t - q*e - (mmr_b*|q|*m*t - cum_b)]

where ``F`` gathers everything that does not move (the other positions'
uPnL and maintenance, the collateral on other underlyings), ``coll`` is the
haircut collateral on the underlying and the legs are the account's cross
positions on it (qty ``q``, entry ``e``, mark ``m``, bracket ``b`` of the notional
``|q|*m*t``). Within fixed brackets ``f`` is linear, ``A + D*t``; it kinks where
a leg's notional crosses a bracket floor. Starting at ``t = 1`` each account
walks its segments outwards (down to ``t = 0``, up without bound): on each
segment the root ``t = -A/D`` is exact, and the walk moves on to the next
kink only if the sign has not changed by then. This is the same piecewise
linear root finding as :func:`monitor.risk.liquidation.distance_to_liquidation`,
run for all accounts at once; an account takes as many steps as brackets it
crosses (rarely more than one or two).

With maintenance rates ascending across brackets (as every venue publishes
them) each leg's maintenance is convex in ``t`` and ``f`` is concave: the moves
at which an account is healthy form one interval. For an account healthy now
that interval contains 0, so once it is liquidatable on the way out it stays
so: "liquidatable within a move of x" and "liquidatable at x" are the same
set, and its contribution to the map is cumulative in |x|. (The walk itself
does not need concavity; it is only used to skip walks that cannot end.)

The notional an account contributes at a move ``x`` is its total cross notional
at the moved prices (its positions on the underlying at ``(1 + x)`` times
their marks, the others at their marks): everything a liquidation would close.
An account liquidatable already is evaluated directly at each grid move (a
move in its favour can bring it back above water), and counts where it is
liquidatable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.cascade.shocks import move_label
from monitor.cascade.snapshot import (
    BaseFigures,
    BookSnapshot,
    base_figures,
    bracket_index,
    maintenance_margin,
    sums,
    symbol_bounds,
)
from monitor.instruments.model import RiskParams

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

DEFAULT_MOVES: tuple[float, ...] = tuple(k / 100 for k in range(-30, 31))
_CHUNK = 20_000  # accounts evaluated at every grid point at once


@dataclass(frozen=True, eq=False)
class LiquidationMap:
    """``notional[u, j]`` and ``accounts[u, j]``: liquidatable if underlying ``u``
    moves by ``moves[j]`` (others unchanged). Additive over disjoint books."""

    underlyings: tuple[str, ...]
    moves: F64  # ascending
    notional: F64  # (underlyings, moves)
    accounts: I64  # (underlyings, moves)

    def at(self, underlying: str, move: float) -> tuple[float, int]:
        """``(notional, accounts)`` at one grid move (exact match)."""
        u = self.underlyings.index(underlying)
        hit = np.flatnonzero(np.isclose(self.moves, move, rtol=0.0, atol=1e-12))
        if hit.size == 0:
            raise KeyError(f"move {move!r} is not on the map's grid")
        j = int(hit[0])
        return float(self.notional[u, j]), int(self.accounts[u, j])

    def to_json(self) -> dict[str, Any]:
        return {
            "moves": [float(x) for x in self.moves],
            "underlyings": {
                u: {
                    "notional": [float(v) for v in self.notional[k]],
                    "accounts": [int(v) for v in self.accounts[k]],
                }
                for k, u in enumerate(self.underlyings)
            },
        }

    def labels(self) -> list[str]:
        return [move_label(float(x)) for x in self.moves]

    def restricted(self, moves: Sequence[float]) -> LiquidationMap | None:
        """The map on the grid of ``moves`` taken from this one's columns, or None
        if a move is not on this grid (each column is computed on its own: the
        figures are those of a map on that grid, up to the order of summation)."""
        grid = map_grid(moves)
        at = np.searchsorted(self.moves, grid)
        if np.any(at >= self.moves.size) or not np.array_equal(self.moves[at], grid):
            return None
        return LiquidationMap(self.underlyings, grid, self.notional[:, at].copy(),
                              self.accounts[:, at].copy())  # fmt: skip


@dataclass(frozen=True, eq=False)
class _Exposure:
    """The legs (positions on one underlying) and collateral of a snapshot."""

    legs: I64  # position rows on the underlying, ascending (so sorted by instrument)
    coll: F64  # per account: haircut collateral value on the underlying
    leg_notional: F64  # per account: notional of its legs
    exposed: Bool  # per account: has cross positions and legs or collateral here


def _exposure(snap: BookSnapshot, base: BaseFigures, u: int) -> _Exposure:
    p = snap.params
    n = snap.n_accounts
    legs = np.flatnonzero(p.sym_underlying[snap.sym] == u).astype(np.int64)
    on_u = p.asset_underlying == u
    w = np.where(on_u, snap.collateral_weights(), 0.0)
    coll: F64 = w @ snap.bal if on_u.any() else np.zeros(n)
    has_leg = np.bincount(snap.acct[legs], minlength=n) > 0
    leg_notional = sums(snap.acct[legs], base.notional[legs], n)
    exposed = (base.n_cross > 0) & (has_leg | (coll != 0.0))
    return _Exposure(legs, coll, leg_notional, exposed)


def distances(
    snap: BookSnapshot, underlying: str, base: BaseFigures | None = None
) -> tuple[F64, F64]:
    """Per account, the smallest relative moves ``(down, up)`` of ``underlying`` at
    which the account's cross part becomes liquidatable: ``down`` in ``[-1, 0]``,
    ``up >= 0``, ``0`` for an account liquidatable already, NaN where no move
    of this underlying does it (or the account has no cross positions)."""
    base = base if base is not None else base_figures(snap)
    u = snap.params.underlyings.index(underlying)
    return _distances(snap, base, _exposure(snap, base, u))


def _distances(snap: BookSnapshot, base: BaseFigures, ex: _Exposure) -> tuple[F64, F64]:
    n = snap.n_accounts
    down = np.full(n, np.nan)
    up = np.full(n, np.nan)
    now = base.liquidatable
    down[now] = 0.0
    up[now] = 0.0
    walk = np.flatnonzero(ex.exposed & ~now)
    if walk.size == 0:
        return down, up
    leg, fixed, coll = _split(snap, base, ex, walk)
    t_down = _walk(snap.params, leg, fixed, coll, down=True)
    t_up = _walk(snap.params, leg, fixed, coll, down=False)
    # A root a rounding error past t = 1 is a move of zero.
    down[walk] = np.minimum(t_down - 1.0, 0.0)
    up[walk] = np.maximum(t_up - 1.0, 0.0)
    return down, up


def _split(
    snap: BookSnapshot, base: BaseFigures, ex: _Exposure, who: I64
) -> tuple[_Legs, F64, F64]:
    """The legs of accounts ``who`` (numbered by their place in ``who``), the part
    of ``f`` that does not move (``F``) and the moving collateral."""
    cid = np.full(snap.n_accounts, -1, dtype=np.int64)
    cid[who] = np.arange(who.size)
    legs = ex.legs[cid[snap.acct[ex.legs]] >= 0]
    acc = cid[snap.acct[legs]]
    q = snap.qty[legs]
    m = snap.mark[legs]
    leg = _Legs(acc=acc, sym=snap.sym[legs], notional=np.abs(q) * m, qm=q * m,
                qe=q * snap.entry[legs], entry=snap.entry[legs], qty=q, mark=m)  # fmt: skip
    leg_upnl = sums(acc, base.upnl[legs], who.size)
    leg_mm = sums(acc, base.mm[legs], who.size)
    fixed = (
        base.wallet[who] - ex.coll[who] + base.acc_upnl[who] - leg_upnl
        - (base.acc_mm[who] - leg_mm)
    )  # fmt: skip
    return leg, fixed, ex.coll[who]


def _liquidatable_at(
    snap: BookSnapshot, base: BaseFigures, ex: _Exposure, who: I64, grid: F64
) -> npt.NDArray[np.bool_]:
    """``(accounts, moves)``: whether accounts that are liquidatable already still
    are at each move. ``f`` is evaluated directly: a move the right way can bring
    such an account back above water, so no distance describes it."""
    leg, fixed, coll = _split(snap, base, ex, who)
    p = snap.params
    t = 1.0 + grid
    mark_t = leg.mark[:, None] * t[None, :]
    mm = maintenance_margin(p, symbol_bounds(leg.sym, p.n_instruments),
                            np.abs(leg.qty)[:, None] * mark_t)  # fmt: skip
    per_leg = leg.qty[:, None] * (mark_t - leg.entry[:, None]) - mm
    f = fixed[:, None] + coll[:, None] * t[None, :]
    np.add.at(f, leg.acc, per_leg)
    out: npt.NDArray[np.bool_] = f <= 0.0
    return out


@dataclass(frozen=True, eq=False)
class _Legs:
    acc: I64  # compact account id
    sym: I64  # instrument, ascending
    notional: F64  # |q| * m at t = 1
    qm: F64  # q * m
    qe: F64  # q * e
    entry: F64
    qty: F64
    mark: F64


@dataclass(frozen=True, eq=False)
class _Tables:
    """Bracket tables flattened with one extra empty bracket per instrument, so
    ``flat + 1`` is always the next bracket (floor +inf past the last one)."""

    width: int
    floor: F64
    mmr: F64
    cum: F64
    last: I64  # flat index of each instrument's last real bracket
    concave: bool  # maintenance rates ascend in every instrument

    @classmethod
    def of(cls, p: RiskParams) -> _Tables:
        n, w = p.br_floor.shape
        pad = np.full((n, 1), np.inf)
        zero = np.zeros((n, 1))
        mmr_ok = all(
            bool(np.all(np.diff(p.br_mmr[s, : int(p.br_count[s])]) >= 0.0)) for s in range(n)
        )
        return cls(
            width=w + 1,
            floor=np.hstack([p.br_floor, pad]).ravel(),
            mmr=np.hstack([p.br_mmr, zero]).ravel(),
            cum=np.hstack([p.br_cum, zero]).ravel(),
            last=np.arange(n, dtype=np.int64) * (w + 1) + p.br_count - 1,
            concave=mmr_ok,
        )


def _walk(params: RiskParams, leg: _Legs, fixed: F64, coll: F64, *, down: bool) -> F64:
    """Exact first root of ``f(t)`` from ``t = 1`` downwards (to 0) or upwards; NaN
    where there is none. ``f(1) > 0`` for every account passed in."""
    tb = _Tables.of(params)
    n = fixed.shape[0]
    root = np.full(n, np.nan)
    b = bracket_index(params, symbol_bounds(leg.sym, params.n_instruments), leg.notional,
                      below=down)  # fmt: skip
    flat = leg.sym * tb.width + b
    acc, notional, qm, qe = leg.acc, leg.notional, leg.qm, leg.qe
    ids = np.arange(n)
    if tb.concave:
        # f is concave: if its slope on the outermost segment (first bracket below,
        # last bracket above) does not point towards zero, f never reaches zero.
        end = leg.sym * tb.width if down else tb.last[leg.sym]
        slope = coll + sums(acc, qm - tb.mmr[end] * notional, n)
        keep = slope > 0.0 if down else slope < 0.0
        acc, flat, notional, qm, qe, ids, fixed, coll = _compact(
            keep, acc, flat, notional, qm, qe, ids, fixed, coll
        )
    while ids.size:
        m = ids.size
        a = fixed + sums(acc, tb.cum[flat] - qe, m)
        d = coll + sums(acc, qm - tb.mmr[flat] * notional, m)
        # The segment ends at the nearest kink in the walking direction.
        if down:
            leg_edge = tb.floor[flat] / notional  # 0 in the first bracket
            edge = np.zeros(m)
            np.maximum.at(edge, acc, leg_edge)
            hit = a + d * edge <= 0.0
            none = ~hit & (edge <= 0.0)
        else:
            leg_edge = tb.floor[flat + 1] / notional  # +inf past the last bracket
            edge = np.full(m, np.inf)
            np.minimum.at(edge, acc, leg_edge)
            finite = np.isfinite(edge)
            hit = np.where(finite, a + d * np.where(finite, edge, 0.0) <= 0.0, d < 0.0)
            none = ~hit & ~finite
        with np.errstate(divide="ignore", invalid="ignore"):
            root[ids[hit]] = -a[hit] / d[hit]
        keep = ~hit & ~none
        if not keep.any():
            break
        # Step the legs that reach the kink into their next bracket.
        step = (leg_edge >= edge[acc]) if down else (leg_edge <= edge[acc])
        flat = flat - step if down else flat + step
        acc, flat, notional, qm, qe, ids, fixed, coll = _compact(
            keep, acc, flat, notional, qm, qe, ids, fixed, coll
        )
    return root


def _compact(
    keep: Bool,
    acc: I64,
    flat: I64,
    notional: F64,
    qm: F64,
    qe: F64,
    ids: I64,
    fixed: F64,
    coll: F64,
) -> tuple[I64, I64, F64, F64, F64, I64, F64, F64]:
    """Keep the accounts in ``keep`` (and their legs), renumbered from 0."""
    renum = np.cumsum(keep) - 1
    lk = keep[acc]
    return (
        renum[acc[lk]], flat[lk], notional[lk], qm[lk], qe[lk], ids[keep], fixed[keep],
        coll[keep],
    )  # fmt: skip


def map_grid(moves: Sequence[float]) -> F64:
    """``moves`` as a map's grid: ascending, unique, finite and above -100%."""
    grid = np.unique(np.asarray(moves, dtype=np.float64))
    if grid.size == 0 or not np.all(np.isfinite(grid)) or grid[0] <= -1.0:
        raise ValueError("map moves must be finite and above -100%")
    return grid


def liquidation_map(
    snap: BookSnapshot,
    moves: Sequence[float] = DEFAULT_MOVES,
    base: BaseFigures | None = None,
) -> LiquidationMap:
    """The map of every underlying over ``moves`` (relative, each above -1)."""
    grid = map_grid(moves)
    base = base if base is not None else base_figures(snap)
    unders = snap.params.underlyings
    notional = np.zeros((len(unders), grid.size))
    accounts = np.zeros((len(unders), grid.size), dtype=np.int64)
    for u in range(len(unders)):
        map_underlying(snap, base, u, grid, notional[u], accounts[u])
    return LiquidationMap(unders, grid, notional, accounts)


@dataclass(frozen=True, eq=False)
class UnderlyingPass:
    """What the map of one underlying found, for computations on the same
    distances (:mod:`monitor.cascade.partial`): per account, the distance down
    and up (NaN: never liquidated that way, or liquidatable already), and the
    accounts liquidatable already with, chunk by chunk, whether they still are
    at each grid move."""

    down: F64
    up: F64
    stuck: list[tuple[I64, Bool]]  # (accounts, (accounts, moves) liquidatable there)


def grid_sides(grid: F64) -> list[tuple[Bool, int]]:
    """The grid's moves by the distance that decides them, as ``(moves, 0 for
    down or 1 for up)``: the moves below zero, those above, and zero itself
    (decided by the distance down)."""
    return [(grid < 0.0, 0), (grid > 0.0, 1), (grid == 0.0, 0)]


def map_underlying(
    snap: BookSnapshot, base: BaseFigures, u: int, grid: F64, notional: F64, accounts: I64
) -> UnderlyingPass:
    """Add underlying ``u``'s map over ``grid`` (ascending, unique) to the rows
    ``notional`` and ``accounts``; returns what it found on the way."""
    ex = _exposure(snap, base, u)
    down, up = _distances(snap, base, ex)
    other = base.acc_notional - ex.leg_notional
    stuck = np.flatnonzero(base.liquidatable & ex.exposed)
    down[stuck] = np.nan
    up[stuck] = np.nan
    for side, which in grid_sides(grid):
        if side.any():
            g = grid[side]
            cnt, s_other, s_leg = _cumulate((down, up)[which], g, other, ex.leg_notional)
            notional[side] = s_other + (1.0 + g) * s_leg
            accounts[side] = cnt
    chunks = []
    for lo in range(0, stuck.size, _CHUNK):
        who = stuck[lo : lo + _CHUNK]
        liq = _liquidatable_at(snap, base, ex, who, grid)
        at_x = other[who][:, None] + ex.leg_notional[who][:, None] * (1.0 + grid)[None, :]
        accounts += liq.sum(axis=0)
        notional += np.where(liq, at_x, 0.0).sum(axis=0)
        chunks.append((who, liq))
    return UnderlyingPass(down, up, chunks)


def _cumulate(dist: F64, g: F64, other: F64, leg: F64) -> tuple[I64, F64, F64]:
    """Per grid move (all of one sign, ascending; or the zero move alone), the
    accounts whose distance is within it (``g <= dist <= 0`` at and below zero,
    ``0 <= dist <= g`` above) and the sums of their fixed and moving notionals."""
    ok = ~np.isnan(dist)
    d = dist[ok]
    if g[0] <= 0.0:
        # included at j iff d >= g[j]: bin = number of grid points <= d
        bins = np.searchsorted(g, d, side="right")
        pick = slice(1, None)
        rev = True
    else:
        # included at j iff d <= g[j]: bin = number of grid points < d
        bins = np.searchsorted(g, d, side="left")
        pick = slice(0, -1)
        rev = False
    m = g.size + 1
    per_bin = [
        np.bincount(bins, minlength=m).astype(np.float64),
        sums(bins, other[ok], m),
        sums(bins, leg[ok], m),
    ]
    out = [np.cumsum(s[::-1])[::-1][pick] if rev else np.cumsum(s)[pick] for s in per_bin]
    return out[0].astype(np.int64), out[1], out[2]
