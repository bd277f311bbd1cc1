"""Liquidation maps that several instances can merge.

Instances in one consumer group hold disjoint sets of accounts (accounts are
partitioned by key) and every instance sees all prices, so the map of the
whole market is the sum of the instances' maps: notional and account counts
per underlying per grid move simply add up. An instance publishes its
partial map (:func:`to_wire`); whoever aggregates decodes and merges them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson

from monitor.cascade.liqmap import LiquidationMap

WIRE_VERSION = 1


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


def to_wire(m: LiquidationMap, *, instance: str = "") -> bytes:
    """JSON bytes of a partial map (versioned, with the instance that made it)."""
    body: dict[str, Any] = {"version": WIRE_VERSION, "instance": instance, **m.to_json()}
    return orjson.dumps(body)


def from_wire(raw: bytes) -> LiquidationMap:
    data = orjson.loads(raw)
    if not isinstance(data, dict) or data.get("version") != WIRE_VERSION:
        raise ValueError(f"not a version {WIRE_VERSION} liquidation map")
    unders = data["underlyings"]
    names = tuple(unders)
    return LiquidationMap(
        underlyings=names,
        moves=np.asarray(data["moves"], dtype=np.float64),
        notional=np.asarray([unders[u]["notional"] for u in names], dtype=np.float64),
        accounts=np.asarray([unders[u]["accounts"] for u in names], dtype=np.int64),
    )
