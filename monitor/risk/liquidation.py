"""Liquidation prices and distance to liquidation (DESIGN.md section 4).

For a linear contract the account's equity minus maintenance margin is
piecewise linear in the mark of one instrument, with kinks where the notional
crosses a bracket floor; with maintenance rates below 1 it is strictly
monotonic in the price, so each position has at most one liquidation price.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from monitor.instruments.model import Bracket


def liquidation_price(
    qty: float,
    entry: float,
    wallet: float,
    other_mm: float,
    other_upnl: float,
    brackets: Sequence[Bracket],
) -> float | None:
    """``LP = (WB - TMM1 + UPNL1 + cum - side*Q*EP) / (Q*mmr - side*Q)``, solved per
    bracket; the solution whose notional ``Q*LP`` lies in that bracket is kept.
    None when no positive price liquidates the position."""
    if qty == 0.0:
        return None
    side = 1.0 if qty > 0 else -1.0
    q = abs(qty)
    for k, b in enumerate(brackets):
        denom = q * b.mmr - side * q
        if denom == 0.0:
            continue
        lp = (wallet - other_mm + other_upnl + b.cum - side * q * entry) / denom
        if not lp > 0.0 or not math.isfinite(lp):
            continue
        notional = q * lp
        upper = brackets[k + 1].floor if k + 1 < len(brackets) else math.inf
        if b.floor <= notional * (1 + 1e-12) and notional < upper * (1 + 1e-12):
            return lp
    return None


def maintenance(notional: float, brackets: Sequence[Bracket]) -> float:
    b = _bracket(notional, brackets)
    return notional * b.mmr - b.cum


@dataclass(frozen=True, slots=True)
class MovingLeg:
    """A position on the underlying being moved: qty, entry, mark, brackets."""

    qty: float
    entry: float
    mark: float
    brackets: Sequence[Bracket]


def distance_to_liquidation(
    fixed_equity: float,
    fixed_mm: float,
    moving_collateral: float,
    legs: Sequence[MovingLeg],
    liquidatable: float = 1.0,
) -> tuple[float | None, float | None]:
    """Smallest relative moves ``(down, up)`` of one underlying at which the account
    becomes liquidatable (margin ratio ``MM / E`` at or above ``liquidatable``, the
    configured threshold; equity <= 0 counts too). ``fixed_*`` are the parts that do
    not move, ``moving_collateral`` the haircut value of collateral on that
    underlying. ``(0.0, 0.0)`` when it is liquidatable already; None where no move
    does it.

    With ``L > 0``, ``MM / E >= L`` (E > 0) and ``E <= 0`` are together the set
    where ``E - MM / L <= 0`` (MM >= 0), which stays piecewise linear in the move.
    (An account already at or below that is at distance 0, whatever it holds.)"""
    inv = 1.0 / liquidatable

    def f(x: float) -> float:
        e = fixed_equity + moving_collateral * (1.0 + x)
        mm = fixed_mm
        for leg in legs:
            m = leg.mark * (1.0 + x)
            e += leg.qty * (m - leg.entry)
            mm += maintenance(abs(leg.qty) * m, leg.brackets)
        return e - mm * inv

    def slope(x: float) -> float:
        # df/dx on a segment where no position crosses a floor (brackets as at x):
        # exact, where differencing f over a step loses the digits f and its
        # change share (a small debt against a large equity: a slope 1e-9 of f)
        d = moving_collateral
        for leg in legs:
            b = _bracket(abs(leg.qty) * leg.mark * (1.0 + x), leg.brackets)
            d += leg.qty * leg.mark - abs(leg.qty) * leg.mark * b.mmr * inv
        return d

    f0 = f(0.0)
    if f0 <= 0.0:
        return 0.0, 0.0
    # A floor that a (vanishingly small) position would reach only by a move that
    # takes some mark beyond the float range is no kink: the gap is not defined there.
    top = max((leg.mark for leg in legs), default=1.0)
    kinks: list[float] = []
    for leg in legs:
        n0 = abs(leg.qty) * leg.mark
        if n0 > 0.0:
            for b in leg.brackets[1:]:
                k = b.floor / n0 - 1.0
                if math.isfinite(top * (1.0 + k)):
                    kinks.append(k)
    down_pts = [*sorted((x for x in kinks if -1.0 < x < 0.0), reverse=True), -1.0]
    up_pts = sorted(x for x in kinks if x > 0.0)
    return _first_root(f, 0.0, f0, down_pts, None), _first_root(f, 0.0, f0, up_pts, slope)


def _bracket(notional: float, brackets: Sequence[Bracket]) -> Bracket:
    chosen = brackets[0]
    for b in brackets:
        if b.floor <= notional:
            chosen = b
        else:
            break
    return chosen


def _first_root(
    f: Callable[[float], float],
    x0: float,
    f0: float,
    pts: list[float],
    slope: Callable[[float], float] | None,
) -> float | None:
    """The first zero of ``f`` from ``x0`` through the kinks ``pts`` (linear between
    them); past the last one, with ``slope``, where its line reaches zero."""
    xa, fa = x0, f0
    for xb in pts:
        fb = f(xb)
        if fb <= 0.0:
            return xa + (xb - xa) * fa / (fa - fb)
        xa, fa = xb, fb
    if slope is None:
        return None
    d = slope(xa + 1.0)
    if not d < 0.0:
        return None
    x = xa + fa / -d
    return x if math.isfinite(x) else None
