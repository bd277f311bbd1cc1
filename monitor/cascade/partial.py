"""One instance's share of the market view, aggregated per symbol, and the merge.

Instances in one consumer group hold disjoint sets of accounts (accounts are
partitioned by key) and every instance sees all prices. Each publishes a
:class:`PartialMarket` of its own accounts to the compacted ``partials``
topic (key = instance id); whoever wants the whole market merges the latest
partial of every instance (:func:`merge_partials`).

A partial carries, per underlying ``u`` and move ``g`` of a grid (the other
underlyings at their marks):

- the liquidation map: ``notional[u, g]`` and ``accounts[u, g]`` liquidatable
  (:mod:`monitor.cascade.liqmap`);
- the cascade inputs: ``flow[u, g, s]``, the forced flow per instrument ``s``
  (signed as buying: closing a long sells) that closing those accounts would
  trade, and ``gross[u, g, s]``, the notional it would close, both valued at the
  partial's marks (the group cascade values them at its own round's prices:
  quantity times mark times the instrument's price factor, as the exact
  cascade does).

Nothing in it is per account: a partial's size depends on the grid and the
instruments only. Sums over instances are exact for the map (its figures add
up over disjoint books; each instance's figures are at its own snapshot's
prices, a few seconds apart at most). The cascade on the merged inputs is an
approximation: see :mod:`monitor.cascade.group`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from monitor.cascade.liqmap import (
    DEFAULT_MOVES,
    LiquidationMap,
    grid_sides,
    map_grid,
    map_underlying,
)
from monitor.cascade.snapshot import BookSnapshot, base_figures, sums

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

WIRE_VERSION = 2


def merge(maps: Iterable[LiquidationMap]) -> LiquidationMap:
    """The sum of maps computed over disjoint books on the same grid and underlyings."""
    items = list(maps)
    if not items:
        raise ValueError("merge needs at least one map")
    first = items[0]
    notional = first.notional.copy()
    accounts = first.accounts.copy()
    for m in items[1:]:
        if m.underlyings != first.underlyings or not np.array_equal(m.moves, first.moves):
            raise ValueError("maps on different underlyings or move grids cannot be merged")
        notional += m.notional
        accounts += m.accounts
    return LiquidationMap(first.underlyings, first.moves.copy(), notional, accounts)


@dataclass(frozen=True, eq=False)
class PartialMarket:
    """One instance's map and cascade inputs (see the module docstring)."""

    instance: str
    ts: int  # event time of the snapshot it was computed from
    created_ms: int  # processing time it was computed at
    partitions: tuple[int, ...]  # the account-events partitions it covers
    symbols: tuple[str, ...]  # the instruments, in instrument-id order
    marks: F64  # per instrument: the mark it was computed at (NaN: no tick yet)
    map: LiquidationMap
    flow: F64  # (underlyings, moves, instruments), at the marks, signed as buying
    gross: F64  # (underlyings, moves, instruments), at the marks

    @property
    def underlyings(self) -> tuple[str, ...]:
        return self.map.underlyings

    @property
    def moves(self) -> F64:
        return self.map.moves


def partial_market(
    snap: BookSnapshot,
    moves: Sequence[float] = DEFAULT_MOVES,
    *,
    instance: str = "",
    partitions: Sequence[int] = (),
    created_ms: int = 0,
) -> PartialMarket:
    """The partial of one book snapshot."""
    p = snap.params
    base = base_figures(snap)
    grid = map_grid(moves)
    n_u, n_g, n_s = len(p.underlyings), grid.size, p.n_instruments
    notional = np.zeros((n_u, n_g))
    accounts = np.zeros((n_u, n_g), dtype=np.int64)
    flow = np.zeros((n_u, n_g, n_s))
    gross = np.zeros((n_u, n_g, n_s))
    value = -snap.qty * snap.mark  # forced flow of closing at the marks, signed as buying
    both = np.stack((value, np.abs(value)))  # flow and gross, summed in one pass
    for u in range(n_u):
        # the map's own pass over the underlying: its distances serve the flows
        seen = map_underlying(snap, base, u, grid, notional[u], accounts[u])
        per_position = (seen.down[snap.acct], seen.up[snap.acct])
        for side, which in grid_sides(grid):
            if side.any():
                f, g = _cumulate_flows(per_position[which], snap.sym, both, grid[side], n_s)
                flow[u][side] = f
                gross[u][side] = g
        for who, liq in seen.stuck:
            f, g = _stuck_flows(snap, who, liq, both, n_s)
            flow[u] += f
            gross[u] += g
    m = LiquidationMap(p.underlyings, grid, notional, accounts)
    sym_price = snap.sym_price[:n_s]
    return PartialMarket(
        instance=instance,
        ts=snap.ts,
        created_ms=created_ms,
        partitions=tuple(sorted(int(x) for x in partitions)),
        symbols=tuple(p.symbols[:n_s]),
        marks=sym_price.copy(),
        map=m,
        flow=flow,
        gross=gross,
    )


def _cumulate_flows(dist: F64, sym: I64, values: F64, g: F64, n_s: int) -> F64:
    """``(len(values), moves, instruments)``: each row of ``values`` summed over the
    positions whose account's distance is within each move of ``g`` (all of one
    sign, ascending; or zero alone), with the same inclusion rule as the map."""
    ok = ~np.isnan(dist)
    d = dist[ok]
    if g[0] <= 0.0:
        bins = np.searchsorted(g, d, side="right")
        pick, rev = slice(1, None), True
    else:
        bins = np.searchsorted(g, d, side="left")
        pick, rev = slice(0, -1), False
    m = g.size + 1
    cells = bins * n_s + sym[ok]
    out = np.empty((values.shape[0], g.size, n_s))
    for k in range(values.shape[0]):
        per_bin = sums(cells, values[k][ok], m * n_s).reshape(m, n_s)
        cum = np.cumsum(per_bin[::-1], axis=0)[::-1] if rev else np.cumsum(per_bin, axis=0)
        out[k] = cum[pick]
    return out


def _stuck_flows(
    snap: BookSnapshot, stuck: I64, liq: npt.NDArray[np.bool_], values: F64, n_s: int
) -> F64:
    """``(len(values), moves, instruments)``: each row of ``values`` summed over the
    positions of accounts liquidatable already, at the moves where they still are
    (``liq``, accounts by moves; as the map counts them)."""
    local = np.full(snap.n_accounts, -1, dtype=np.int64)
    local[stuck] = np.arange(stuck.size)
    rows = np.flatnonzero(local[snap.acct] >= 0)
    at = liq[local[snap.acct[rows]]]  # (positions, moves): still liquidatable there
    n_g = liq.shape[1]
    # one bincount per row of values over (move, instrument) cells
    cells = (np.arange(n_g) * n_s + snap.sym[rows, None])[at]
    owner = np.broadcast_to(rows[:, None], at.shape)[at]
    out = np.empty((values.shape[0], n_g, n_s))
    for k in range(values.shape[0]):
        out[k] = sums(cells, values[k][owner], n_g * n_s).reshape(n_g, n_s)
    return out


# ---------------------------------------------------------------- wire


def to_wire(part: PartialMarket) -> bytes:
    """JSON bytes of a partial (versioned; non-finite marks as null)."""
    m = part.map
    body: dict[str, Any] = {
        "version": WIRE_VERSION,
        "instance": part.instance,
        "ts": part.ts,
        "created_ms": part.created_ms,
        "partitions": list(part.partitions),
        "symbols": list(part.symbols),
        "marks": [float(x) if np.isfinite(x) else None for x in part.marks],
        "moves": [float(x) for x in m.moves],
        "underlyings": {
            u: {
                "notional": [float(v) for v in m.notional[k]],
                "accounts": [int(v) for v in m.accounts[k]],
                "flow": part.flow[k].tolist(),
                "gross": part.gross[k].tolist(),
            }
            for k, u in enumerate(m.underlyings)
        },
    }
    return orjson.dumps(body)


class PartialError(ValueError):
    """A partial on the topic that cannot be read (named, never fatal)."""


def from_wire(raw: bytes) -> PartialMarket:
    """Parse :func:`to_wire`'s bytes; :class:`PartialError` says what is wrong."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PartialError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != WIRE_VERSION:
        got = data.get("version") if isinstance(data, dict) else None
        raise PartialError(f"not a version {WIRE_VERSION} partial (version {got!r})")
    try:
        unders = data["underlyings"]
        names = tuple(unders)
        moves = np.asarray(data["moves"], dtype=np.float64)
        symbols = tuple(str(s) for s in data["symbols"])
        marks = np.asarray([np.nan if x is None else x for x in data["marks"]], np.float64)
        notional = np.asarray([unders[u]["notional"] for u in names], dtype=np.float64)
        accounts = np.asarray([unders[u]["accounts"] for u in names], dtype=np.int64)
        flow = np.asarray([unders[u]["flow"] for u in names], dtype=np.float64)
        gross = np.asarray([unders[u]["gross"] for u in names], dtype=np.float64)
        n_u, n_g, n_s = len(names), moves.size, len(symbols)
        if (
            notional.shape != (n_u, n_g)
            or accounts.shape != (n_u, n_g)
            or flow.shape != (n_u, n_g, n_s)
            or gross.shape != (n_u, n_g, n_s)
            or marks.shape != (n_s,)
        ):
            raise PartialError("array shapes do not match the grid, underlyings and symbols")
        return PartialMarket(
            instance=str(data["instance"]),
            ts=int(data["ts"]),
            created_ms=int(data["created_ms"]),
            partitions=tuple(int(x) for x in data["partitions"]),
            symbols=symbols,
            marks=marks,
            map=LiquidationMap(names, moves, notional, accounts),
            flow=flow,
            gross=gross,
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, PartialError):
            raise
        raise PartialError(f"malformed partial: {exc!r}") from None


# ---------------------------------------------------------------- merge


@dataclass(frozen=True, eq=False)
class MergedMarket:
    """The sum of the partials kept, and why the others were left out."""

    instances: tuple[str, ...]
    partitions: tuple[int, ...]
    ts: int  # the oldest kept partial's event time
    symbols: tuple[str, ...]
    marks: F64  # the newest kept partial's marks
    map: LiquidationMap
    flow: F64
    gross: F64
    left_out: dict[str, str]  # instance -> reason


def merge_partials(
    parts: Iterable[PartialMarket], *, now_ms: int, max_age_ms: int | None = None
) -> MergedMarket:
    """Merge the latest partial of each instance.

    Left out: partials older than ``max_age_ms`` (an instance that died without
    clearing its key), and a partial whose partitions overlap a newer one's (a
    partition moved to another instance, whose partial already counts it). What
    is left out is named in :attr:`MergedMarket.left_out`.
    """
    items = sorted(parts, key=lambda x: x.created_ms, reverse=True)
    if not items:
        raise ValueError("no partials to merge")
    left: dict[str, str] = {}
    kept: list[PartialMarket] = []
    claimed: set[int] = set()
    for part in items:
        if max_age_ms is not None and now_ms - part.created_ms > max_age_ms:
            left[part.instance] = f"older than {max_age_ms / 1000:g} s"
            continue
        overlap = claimed & set(part.partitions)
        if overlap:
            left[part.instance] = f"partitions {sorted(overlap)} are in a newer partial"
            continue
        if kept and (part.symbols != kept[0].symbols or part.underlyings != kept[0].underlyings
                     or not np.array_equal(part.moves, kept[0].moves)):  # fmt: skip
            left[part.instance] = "computed with other instruments or another grid"
            continue
        kept.append(part)
        claimed |= set(part.partitions)
    if not kept:
        raise ValueError(f"every partial was left out: {left}")
    newest = kept[0]
    return MergedMarket(
        instances=tuple(sorted(p.instance for p in kept)),
        partitions=tuple(sorted(claimed)),
        ts=min(p.ts for p in kept),
        symbols=newest.symbols,
        marks=newest.marks.copy(),
        map=merge(p.map for p in kept),
        flow=np.sum([p.flow for p in kept], axis=0),
        gross=np.sum([p.gross for p in kept], axis=0),
        left_out=left,
    )


__all__ = [
    "MergedMarket",
    "PartialError",
    "PartialMarket",
    "from_wire",
    "merge",
    "merge_partials",
    "partial_market",
    "to_wire",
]
