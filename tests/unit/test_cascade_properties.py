"""Properties of the cascade on random books."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.book import MarginBook
from monitor.cascade import CascadeResult, run_cascade, take_snapshot
from monitor.events import BalanceEvent, Event, PositionEvent, Tick
from monitor.instruments import RiskParams, parse_instruments

MARKS = {"BTC-PERP": 100.0, "BTC": 100.0, "ETH-PERP": 10.0, "ETH": 10.0, "SOL-PERP": 5.0}
INSTRUMENTS = ["BTC-PERP", "ETH-PERP", "SOL-PERP"]


def params(depth: float | None) -> RiskParams:
    """Tiered brackets; ``depth`` for every instrument (None: infinitely deep)."""
    extra = {} if depth is None else {"depth_usd": depth, "impact_k": 0.5}
    return parse_instruments(
        {
            "assets": {
                "USDT": {"price": 1.0},
                "BTC": {"price_symbol": "BTC", "haircut": 0.1},
                "ETH": {"price_symbol": "ETH", "haircut": 0.2},
            },
            "instruments": {
                "BTC-PERP": {"underlying": "BTC",
                             "brackets": [[0, 0.01], [1000, 0.02], [5000, 0.05]], **extra},
                "ETH-PERP": {"underlying": "ETH", "brackets": [[0, 0.02], [2000, 0.04]], **extra},
                "SOL-PERP": {"underlying": "SOL", "brackets": [[0, 0.05]], **extra},
            },
        },
        source="tests",
    )  # fmt: skip


def amounts(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.integers(min_value=round(lo * 1e4), max_value=round(hi * 1e4)).map(lambda k: k / 1e4)


@st.composite
def books(draw: st.DrawFn, *, long_only: bool) -> list[Event]:
    events: list[Event] = [Tick(s, p, 1) for s, p in MARKS.items()]
    for i in range(draw(st.integers(min_value=1, max_value=8))):
        acc = f"A{i}"
        held = draw(st.lists(st.sampled_from(INSTRUMENTS), min_size=1, max_size=3, unique=True))
        for sym in held:
            notional = draw(amounts(100.0, 20000.0))
            side = 1.0 if long_only else draw(st.sampled_from([1.0, -1.0]))
            mark = MARKS[sym]
            entry = mark * (1.0 + draw(amounts(-0.1, 0.1)))
            events.append(PositionEvent(acc, sym, side * notional / mark, entry, 2))
        low = 0.0 if long_only else -500.0
        events.append(BalanceEvent(acc, "USDT", draw(amounts(low, 5000.0)), 2))
        if draw(st.booleans()):
            events.append(BalanceEvent(acc, "BTC", draw(amounts(0.0, 20.0)), 2))
    return events


def build(p: RiskParams, events: list[Event]) -> MarginBook:
    book = MarginBook(p)
    for ev in events:
        assert book.apply(ev) is None
    return book


def liquidated(result: CascadeResult) -> set[int]:
    return {int(a) for r in result.rounds for a in r.accounts}


# A bigger shock can liquidate fewer accounts when shorts are squeezed: their
# forced buying can offset the selling that would have taken a long account
# down. With long positions only every forced flow is a sale, and the property
# holds while the impact stays well short of wiping a price out (a sale at a
# lower mark is a smaller notional): the books below hold at most 8 * 20,000 of
# notional per symbol against at least 400,000 of depth.
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    books(long_only=True),
    st.sampled_from(["BTC", "ETH", "SOL"]),
    amounts(-0.5, 0.0),
    amounts(0.0, 0.3),
    st.floats(min_value=4e5, max_value=4e6),
    st.sampled_from(["linear", "sqrt"]),
)
def test_a_bigger_shock_never_liquidates_less(
    events: list[Event], underlying: str, shock: float, extra: float, depth: float, impact: str
) -> None:
    snap = take_snapshot(build(params(depth), events))
    small = run_cascade(snap, {underlying: shock}, impact=impact, max_rounds=100)
    big = run_cascade(snap, {underlying: shock - extra}, impact=impact, max_rounds=100)
    assert liquidated(small) <= liquidated(big)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    books(long_only=False),
    st.dictionaries(st.sampled_from(["BTC", "ETH", "SOL"]), amounts(-0.6, 0.6), min_size=1),
)
def test_infinite_depth_means_nothing_happens_after_round_zero(
    events: list[Event], shocks: dict[str, float]
) -> None:
    snap = take_snapshot(build(params(None), events))
    r = run_cascade(snap, shocks)
    assert len(r.rounds) == 1
    assert r.stopped == "stable"
    for sym, mark in MARKS.items():
        under = sym.removesuffix("-PERP")
        assert r.final_prices[sym] == pytest.approx(mark * (1.0 + shocks.get(under, 0.0)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    books(long_only=False),
    st.dictionaries(st.sampled_from(["BTC", "ETH", "SOL"]), amounts(-0.4, 0.4), min_size=1),
    st.floats(min_value=5e4, max_value=1e6),
    st.sampled_from(["linear", "sqrt"]),
)
def test_every_round_accounts_for_its_notional(
    events: list[Event], shocks: dict[str, float], depth: float, impact: str
) -> None:
    p = params(depth)
    snap = take_snapshot(build(p, events))
    r = run_cascade(snap, shocks, impact=impact, max_rounds=20)
    seen: set[int] = set()
    under = {s: p.underlyings[int(p.sym_underlying[k])] for k, s in enumerate(INSTRUMENTS)}
    for rd in r.rounds:
        fell = {int(a) for a in rd.accounts}
        assert not fell & seen  # nobody is liquidated twice
        seen |= fell
        # Column sums of the spill-over matrix are the notional closed per underlying.
        by_under = {u: 0.0 for u in p.underlyings}
        for s, v in rd.notional_liquidated.items():
            by_under[under[s]] += v
        np.testing.assert_allclose(
            rd.spillover.sum(axis=0), [by_under[u] for u in p.underlyings], rtol=1e-9, atol=1e-6
        )
        for s, v in rd.notional_liquidated.items():
            assert abs(rd.forced_flow[s]) <= v + 1e-9
            assert 0.0 <= rd.healthy_notional_destroyed[s] <= v + 1e-9
        assert rd.bad_debt >= 0.0
    # Everyone closed holds no cross position any more: the total is what they held.
    assert r.accounts_liquidated == len(seen)


@st.composite
def one_sided_books(draw: st.DrawFn, *, side: float) -> list[Event]:
    """Books of positions on one side only, collateral in USDT only (a collateral
    that moves with an underlying would gain on the moves that hurt shorts)."""
    events: list[Event] = [Tick(s, p, 1) for s, p in MARKS.items()]
    for i in range(draw(st.integers(min_value=1, max_value=8))):
        acc = f"A{i}"
        held = draw(st.lists(st.sampled_from(INSTRUMENTS), min_size=1, max_size=3, unique=True))
        for sym in held:
            notional = draw(amounts(100.0, 20000.0))
            mark = MARKS[sym]
            entry = mark * (1.0 + draw(amounts(-0.1, 0.1)))
            events.append(PositionEvent(acc, sym, side * notional / mark, entry, 2))
        events.append(BalanceEvent(acc, "USDT", draw(amounts(0.0, 5000.0)), 2))
    return events


# The mirror of the long-only property: with short positions only every forced
# flow is a purchase, which pushes prices further up against every other short.
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    one_sided_books(side=-1.0),
    st.sampled_from(["BTC", "ETH", "SOL"]),
    amounts(0.0, 0.5),
    amounts(0.0, 0.3),
    st.floats(min_value=4e5, max_value=4e6),
    st.sampled_from(["linear", "sqrt"]),
)
def test_a_bigger_upward_shock_never_liquidates_fewer_shorts(
    events: list[Event], underlying: str, shock: float, extra: float, depth: float, impact: str
) -> None:
    snap = take_snapshot(build(params(depth), events))
    small = run_cascade(snap, {underlying: shock}, impact=impact, max_rounds=100)
    big = run_cascade(snap, {underlying: shock + extra}, impact=impact, max_rounds=100)
    assert liquidated(small) <= liquidated(big)


# Without impact only round 0 happens, on any book. Equity minus maintenance is
# concave in the move of one underlying (maintenance is convex in notional), so
# an account healthy before the shock that is liquidatable at a move stays so at
# any bigger move the same way. (One liquidatable already may be rescued by a
# move in its favour: it is left out.)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    books(long_only=False),
    st.sampled_from(["BTC", "ETH", "SOL"]),
    amounts(-0.5, 0.5),
    amounts(0.0, 0.4),
)
def test_a_bigger_shock_never_liquidates_less_on_a_mixed_book_without_impact(
    events: list[Event], underlying: str, shock: float, extra: float
) -> None:
    from monitor.cascade.snapshot import base_figures

    snap = take_snapshot(build(params(None), events))
    before = {int(a) for a in np.flatnonzero(base_figures(snap).liquidatable)}
    bigger = shock - extra if shock < 0 else shock + extra
    small = run_cascade(snap, {underlying: shock})
    big = run_cascade(snap, {underlying: bigger})
    assert len(small.rounds) == len(big.rounds) == 1
    assert liquidated(small) - before <= liquidated(big) - before
