"""The group's market view: partials per instance, their merge, the group cascade."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from monitor.cascade import Scenario, run_cascade, take_snapshot
from monitor.cascade.group import group_cascade
from monitor.cascade.partial import (
    PartialError,
    from_wire,
    merge_partials,
    partial_market,
    to_wire,
)
from monitor.events import BalanceEvent, Event, PositionEvent, Tick
from monitor.instruments import RiskParams
from tests.unit.test_cascade_engine import CROSS_BOOK, book_of, params

FINE = tuple(k / 1000 for k in range(-300, 301))  # 0.1% steps


def _two_underlying_book(rng: np.random.Generator, prefix: str, n: int) -> list[Event]:
    out: list[Event] = []
    for i in range(n):
        a = f"{prefix}{i}"
        out.append(BalanceEvent(a, "USDT", float(rng.uniform(50, 600)), 2))
        if i % 3 == 0:
            out.append(BalanceEvent(a, "BTC", float(rng.uniform(0, 2)), 2))
        for sym, mark in (("BTC-PERP", 100.0), ("ETH-PERP", 10.0)):
            if rng.random() < 0.8:
                qty = float(rng.uniform(-1, 1)) * 2000 / mark
                out.append(PositionEvent(a, sym, qty, mark * float(rng.uniform(0.95, 1.05)), 2))
    return out


PRICES: list[Event] = [Tick("BTC-PERP", 100.0, 1), Tick("BTC", 100.0, 1),
                       Tick("ETH-PERP", 10.0, 1)]  # fmt: skip


def test_partials_of_disjoint_books_merge_into_the_partial_of_the_whole_book() -> None:
    p = params()
    rng = np.random.default_rng(3)
    one, two = _two_underlying_book(rng, "x", 60), _two_underlying_book(rng, "y", 60)
    whole = partial_market(take_snapshot(book_of(p, PRICES + one + two)))
    parts = [
        partial_market(take_snapshot(book_of(p, PRICES + e)), instance=f"i{k}",
                       partitions=[k], created_ms=100 + k)
        for k, e in enumerate((one, two))
    ]  # fmt: skip
    merged = merge_partials([from_wire(to_wire(x)) for x in parts], now_ms=200)
    assert merged.instances == ("i0", "i1") and merged.partitions == (0, 1)
    np.testing.assert_array_equal(merged.map.accounts, whole.map.accounts)
    np.testing.assert_allclose(merged.map.notional, whole.map.notional, rtol=1e-12)
    np.testing.assert_allclose(merged.flow, whole.flow, rtol=1e-12, atol=1e-9)
    assert whole.map.accounts.sum() > 0 and np.abs(whole.flow).sum() > 0


@pytest.mark.parametrize("move", [-0.3, -0.12, -0.05, 0.0, 0.04, 0.2])
def test_the_flow_at_a_grid_move_is_what_closing_the_accounts_liquidatable_there_trades(
    move: float,
) -> None:
    p = params()
    events = PRICES + _two_underlying_book(np.random.default_rng(5), "a", 80)
    part = partial_market(take_snapshot(book_of(p, events)), [move])
    for u, name in enumerate(p.underlyings):
        moved = book_of(p, events)
        for sym in ("BTC-PERP", "BTC") if name == "BTC" else ("ETH-PERP",):
            base = 100.0 if sym.startswith("BTC") else 10.0
            assert moved.apply(Tick(sym, base * (1 + move), 3)) is None
        snap = take_snapshot(moved)
        falling = np.zeros(snap.n_accounts, dtype=bool)
        from monitor.cascade.snapshot import base_figures

        falling[base_figures(snap).liquidatable] = True
        rows = falling[snap.acct]
        want = np.bincount(snap.sym[rows], weights=-snap.qty[rows] * snap.mark[rows],
                           minlength=p.n_instruments)  # fmt: skip
        # the partial's flow is at the marks: the moved instruments' columns scale
        factor = np.where(p.sym_underlying[: p.n_instruments] == u, 1.0 + move, 1.0)
        np.testing.assert_allclose(part.flow[u, 0] * factor, want, rtol=1e-9, atol=1e-9)
        gross = np.bincount(snap.sym[rows], weights=np.abs(snap.qty[rows]) * snap.mark[rows],
                            minlength=p.n_instruments)  # fmt: skip
        np.testing.assert_allclose(part.gross[u, 0] * factor, gross, rtol=1e-9, atol=1e-9)
        assert int(part.map.accounts[u, 0]) == int(falling.sum())


def test_the_group_cascade_of_a_one_underlying_book_is_the_exact_cascade() -> None:
    # ETH-only accounts of the hand-computed book: an ETH shock of -5% liquidates D
    # (distance -2.6%), whose forced sale of 190 moves ETH by -1.9%: ETH ends at
    # 0.95 * 0.981 - 1 = -6.805%, short of B's distance (-7.4%). Nobody else falls.
    p = params()
    eth_only = [e for e in CROSS_BOOK if getattr(e, "account", "") != "A"]
    snap = take_snapshot(book_of(p, eth_only))
    scenario = Scenario((("ETH", -0.05),))
    exact = run_cascade(snap, scenario)
    merged = merge_partials([partial_market(snap, FINE, instance="only")], now_ms=0)
    for bound in ("lower", "upper"):
        g = group_cascade(merged, p, scenario, bound=bound)  # type: ignore[arg-type]
        assert g.accounts_liquidated == exact.accounts_liquidated == 1
        assert g.notional_liquidated == pytest.approx(exact.notional_liquidated, rel=1e-12)
        assert g.final_moves["ETH"] == pytest.approx(exact.final_moves["ETH"], rel=1e-12)
        assert g.final_moves["ETH"] == pytest.approx(0.95 * (1 - 190 / 10000) - 1, rel=1e-12)
        assert g.amplification == pytest.approx(exact.amplification, rel=1e-12)
        assert not g.beyond_grid


def test_the_group_cascade_brackets_a_cross_underlying_cascade() -> None:
    # The hand book's BTC shock: A (BTC and ETH) falls, its ETH sale takes B and D.
    p = params()
    snap = take_snapshot(book_of(p, CROSS_BOOK))
    scenario = Scenario((("BTC", -0.10),))
    exact = run_cascade(snap, scenario)
    merged = merge_partials([partial_market(snap, FINE)], now_ms=0)
    lower = group_cascade(merged, p, scenario, bound="lower")
    upper = group_cascade(merged, p, scenario, bound="upper")
    assert exact.accounts_liquidated == 3
    assert lower.accounts_liquidated <= exact.accounts_liquidated <= upper.accounts_liquidated
    assert [r.round for r in lower.rounds] == [0, 1]
    # round 0 is exact: the shock alone, on one underlying
    assert lower.rounds[0].forced_flow["BTC-PERP"] == pytest.approx(-900.0)
    assert lower.rounds[0].forced_flow["ETH-PERP"] == pytest.approx(-1000.0)
    assert upper.accounts_liquidated == 4  # A counted on both curves
    assert upper.notional_liquidated > exact.notional_liquidated


def _long_btc_only(p: RiskParams, draw: st.DrawFn) -> list[Event]:
    events: list[Event] = [Tick("BTC-PERP", 100.0, 1)]
    for i in range(draw(st.integers(min_value=1, max_value=10))):
        notional = draw(st.integers(min_value=100, max_value=20000))
        entry = 100.0 * (1 + draw(st.integers(min_value=-50, max_value=50)) / 1000)
        events.append(PositionEvent(f"A{i}", "BTC-PERP", notional / 100.0, entry, 2))
        events.append(BalanceEvent(f"A{i}", "USDT", float(draw(st.integers(0, 3000))), 2))
    return events


DEEP = params(BTC_PERP=100000.0)
WIDE = tuple(k / 100 for k in range(-95, 96))  # 1% steps, wide enough for these books


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), shock=st.integers(min_value=-25, max_value=-1))
def test_on_one_underlying_the_bounds_bracket_the_exact_cascade(
    data: st.DataObject, shock: int
) -> None:
    p = DEEP
    snap = take_snapshot(book_of(p, _long_btc_only(p, data.draw)))
    scenario = Scenario((("BTC", shock / 100),))
    exact = run_cascade(snap, scenario)
    merged = merge_partials([partial_market(snap, WIDE)], now_ms=0)
    lo = group_cascade(merged, p, scenario, bound="lower")
    hi = group_cascade(merged, p, scenario, bound="upper")
    assume(not hi.beyond_grid)
    # (The notional is valued at the grid move, so only the account counts are
    # bracketed by construction.)
    assert lo.accounts_liquidated <= exact.accounts_liquidated <= hi.accounts_liquidated


def test_stale_and_superseded_partials_are_left_out_and_named() -> None:
    p = params()
    snap = take_snapshot(
        book_of(p, PRICES + _two_underlying_book(np.random.default_rng(1), "z", 5))
    )
    fresh = partial_market(snap, instance="b", partitions=[0, 1], created_ms=10_000)
    old_owner = dataclasses.replace(fresh, instance="a", partitions=(1, 2), created_ms=9_000)
    dead = dataclasses.replace(fresh, instance="c", partitions=(5,), created_ms=1_000)
    merged = merge_partials([old_owner, dead, fresh], now_ms=10_500, max_age_ms=5_000)
    assert merged.instances == ("b",)
    assert "newer partial" in merged.left_out["a"] and "older than 5 s" in merged.left_out["c"]
    np.testing.assert_array_equal(merged.map.accounts, fresh.map.accounts)


@pytest.mark.parametrize(
    "raw, problem",
    [(b"{", "not JSON"), (b'{"version": 1}', "version"), (b'{"version": 2}', "malformed")],
)
def test_an_unreadable_partial_is_a_named_error(raw: bytes, problem: str) -> None:
    with pytest.raises(PartialError, match=problem):
        from_wire(raw)
