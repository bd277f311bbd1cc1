"""Maps of disjoint books add up to the map of the whole book."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.book import MarginBook
from monitor.cascade import liquidation_map, take_snapshot
from monitor.cascade.partial import PartialError, from_wire, merge, partial_market, to_wire
from monitor.events import BalanceEvent, Event, PositionEvent, Tick
from monitor.instruments import parse_instruments

PARAMS = parse_instruments(
    {
        "assets": {"USDT": {"price": 1.0}, "BTC": {"price_symbol": "BTC", "haircut": 0.1}},
        "instruments": {
            "BTC-PERP": {"underlying": "BTC", "brackets": [[0, 0.01], [1000, 0.02]]},
            "ETH-PERP": {"underlying": "ETH", "brackets": [[0, 0.02]]},
        },
    },
    source="tests",
)
TICKS: list[Event] = [Tick("BTC-PERP", 100.0, 1), Tick("BTC", 100.0, 1), Tick("ETH-PERP", 10.0, 1)]


def accounts(rng: np.random.Generator, prefix: str, n: int) -> list[Event]:
    out: list[Event] = []
    for i in range(n):
        a = f"{prefix}{i}"
        out.append(BalanceEvent(a, "USDT", float(rng.uniform(0, 3000)), 2))
        out.append(BalanceEvent(a, "BTC", float(rng.uniform(-2, 5)), 2))
        for sym, mark in (("BTC-PERP", 100.0), ("ETH-PERP", 10.0)):
            qty = float(rng.uniform(-300, 300)) / mark * 10
            out.append(PositionEvent(a, sym, qty, mark * float(rng.uniform(0.9, 1.1)), 2))
    return out


def book(events: list[Event]) -> MarginBook:
    b = MarginBook(PARAMS)
    for ev in TICKS + events:
        assert b.apply(ev) is None
    return b


def test_maps_of_two_instances_merge_into_the_map_of_the_whole_book() -> None:
    rng = np.random.default_rng(7)
    one, two = accounts(rng, "p0-", 40), accounts(rng, "p1-", 40)
    whole = liquidation_map(take_snapshot(book(one + two)))
    parts = [partial_market(take_snapshot(book(e)), instance=f"i{k}")
             for k, e in enumerate((one, two))]  # fmt: skip
    merged = merge(from_wire(to_wire(p)).map for p in parts)
    assert merged.underlyings == whole.underlyings
    np.testing.assert_array_equal(merged.moves, whole.moves)
    np.testing.assert_array_equal(merged.accounts, whole.accounts)
    np.testing.assert_allclose(merged.notional, whole.notional, rtol=1e-12)
    assert whole.accounts.sum() > 0  # the book does reach liquidation on the grid


def test_maps_on_different_grids_do_not_merge() -> None:
    snap = take_snapshot(book(accounts(np.random.default_rng(1), "a", 3)))
    with pytest.raises(ValueError, match="different underlyings or move grids"):
        merge([liquidation_map(snap), liquidation_map(snap, [-0.1, 0.1])])
    with pytest.raises(PartialError, match="version"):
        from_wire(b'{"version": 99}')


def test_a_map_restricted_to_some_of_its_moves_is_the_map_on_those_moves() -> None:
    snap = take_snapshot(book(accounts(np.random.default_rng(3), "r", 60)))
    wide = liquidation_map(snap)  # the default grid, -30% .. +30% by 1%
    some = [0.05, -0.2, -0.1, 0.0, 0.2]
    got = wide.restricted(some)
    want = liquidation_map(snap, some)
    assert got is not None
    np.testing.assert_array_equal(got.moves, want.moves)
    np.testing.assert_array_equal(got.accounts, want.accounts)
    np.testing.assert_allclose(got.notional, want.notional, rtol=1e-12)
    assert want.accounts.sum() > 0
    assert wide.restricted([-0.1, 0.123]) is None  # not on the grid
    assert wide.restricted([0.5]) is None  # past its end


def test_the_partial_of_a_book_carries_its_whole_map() -> None:
    """The partial computes the map in the same pass as the flows: the same
    figures as the map alone, on its grid."""
    snap = take_snapshot(book(accounts(np.random.default_rng(4), "w", 60)))
    grid = [-0.3, -0.1, -0.02, 0.0, 0.04, 0.25]
    part = partial_market(snap, grid)
    want = liquidation_map(snap, grid)
    np.testing.assert_array_equal(part.map.moves, want.moves)
    np.testing.assert_array_equal(part.map.accounts, want.accounts)
    np.testing.assert_array_equal(part.map.notional, want.notional)
    with pytest.raises(ValueError, match="above -100%"):
        partial_market(snap, [-1.0, 0.1])
