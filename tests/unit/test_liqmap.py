"""The liquidation map and the vectorised distance to liquidation.

Checked by hand on a book whose roots cross a bracket floor, against the
per-account root finder of :mod:`monitor.risk.liquidation` on random books,
and against re-running the book at moved prices.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from monitor.book import MarginBook
from monitor.book.layout import MODE_CROSS, P_ACCT, P_MODE, P_QTY, P_SYM
from monitor.cascade import distances, liquidation_map, take_snapshot
from monitor.events import BalanceEvent, Event, PositionEvent, Tick
from monitor.instruments import RiskParams, parse_instruments
from monitor.risk.report import distances as scalar_distances

# Two instruments on BTC (an account can hold several legs on one underlying),
# tiered brackets with ascending rates, collateral that moves with BTC and ETH.
RANDOM = parse_instruments(
    {
        "assets": {
            "USDT": {"price": 1.0},
            "BTC": {"price_symbol": "BTC", "haircut": 0.1},
            "ETH": {"price_symbol": "ETH", "haircut": 0.2},
        },
        "instruments": {
            "BTC-PERP": {"underlying": "BTC",
                         "brackets": [[0, 0.01], [1000, 0.02], [5000, 0.05], [20000, 0.1]]},
            "BTC-Q": {"underlying": "BTC", "brackets": [[0, 0.02], [3000, 0.04]]},
            "ETH-PERP": {"underlying": "ETH", "brackets": [[0, 0.02], [2000, 0.04]]},
            "SOL-PERP": {"underlying": "SOL", "brackets": [[0, 0.05]]},
        },
    },
    source="tests",
)  # fmt: skip
MARKS = {"BTC-PERP": 100.0, "BTC-Q": 101.0, "BTC": 100.0, "ETH-PERP": 10.0, "ETH": 10.0,
         "SOL-PERP": 5.0}  # fmt: skip
INSTRUMENTS = ["BTC-PERP", "BTC-Q", "ETH-PERP", "SOL-PERP"]

# One instrument, floors at 0 and 1000 notional: rates 1% then 2%, so
# cum_1 = 1000 * (0.02 - 0.01) = 10 and MM = 0.02 N - 10 above 1000.
KINKED = parse_instruments(
    {
        "assets": {"USDT": {"price": 1.0}},
        "instruments": {"X-PERP": {"underlying": "X", "brackets": [[0, 0.01], [1000, 0.02]]}},
    },
    source="tests",
)


def build(params: RiskParams, events: list[Event]) -> MarginBook:
    book = MarginBook(params)
    for ev in events:
        assert book.apply(ev) is None
    return book


def kinked_book() -> MarginBook:
    return build(KINKED, [
        Tick("X-PERP", 100.0, 1),
        # K: 1200 USDT, long 20 @ 100 (notional 2000, MM 0.02*2000 - 10 = 30).
        BalanceEvent("K", "USDT", 1200.0, 2), PositionEvent("K", "X-PERP", 20.0, 100.0, 2),
        # S: 50 USDT, short 10 @ 100 (notional 1000, at the floor: MM 20 - 10 = 10).
        BalanceEvent("S", "USDT", 50.0, 2), PositionEvent("S", "X-PERP", -10.0, 100.0, 2),
        # Q: 10 USDT, nothing open: never liquidatable.
        BalanceEvent("Q", "USDT", 10.0, 2),
    ])  # fmt: skip


def test_distances_by_hand_across_a_bracket_floor() -> None:
    snap = take_snapshot(kinked_book())
    down, up = distances(snap, "X")
    # K at t = 1 + x, notional 2000t. Above the floor (t >= 0.5):
    #   f = 1200 + 20*(100t - 100) - (0.02*2000t - 10) = 1960t - 790, still 190 at t = 0.5.
    # Below it: f = 1200 + 2000t - 2000 - 0.01*2000t = 1980t - 800, zero at t = 800/1980.
    assert down[0] == pytest.approx(800.0 / 1980.0 - 1.0, rel=1e-12)
    assert math.isnan(up[0])  # a long only gains on the way up
    # S: f = 50 - (1000t - 1000) - (0.02*1000t - 10) = 1060 - 1020t for t >= 1.
    assert up[1] == pytest.approx(1060.0 / 1020.0 - 1.0, rel=1e-12)
    assert math.isnan(down[1])
    assert math.isnan(down[2]) and math.isnan(up[2])


def test_map_by_hand_counts_the_notional_at_the_moved_price() -> None:
    snap = take_snapshot(kinked_book())
    m = liquidation_map(snap, [-0.6, -0.59, 0.0, 0.03, 0.04])
    # K falls at -59.6%: in at -60% with notional 2000 * 0.4 = 800, not at -59%.
    assert m.at("X", -0.6) == pytest.approx((800.0, 1))
    assert m.at("X", -0.59) == (0.0, 0)
    assert m.at("X", 0.0) == (0.0, 0)
    # S falls at +3.92%: in at +4% with notional 1000 * 1.04 = 1040.
    assert m.at("X", 0.03) == (0.0, 0)
    assert m.at("X", 0.04) == pytest.approx((1040.0, 1))


def test_default_grid_is_minus_30_to_plus_30_percent_by_1_percent() -> None:
    m = liquidation_map(take_snapshot(kinked_book()))
    assert m.moves.size == 61
    assert m.moves[0] == -0.3 and m.moves[30] == 0.0 and m.moves[-1] == 0.3
    assert m.labels()[:2] == ["-30%", "-29%"] and m.labels()[30] == "0%"


def test_an_account_liquidatable_already_counts_only_where_it_still_is() -> None:
    book = build(KINKED, [
        Tick("X-PERP", 100.0, 1),
        # L: 5 USDT, long 5 @ 100 (notional 500, MM 0.01 * 500 = 5): MR = 1, liquidatable.
        BalanceEvent("L", "USDT", 5.0, 2), PositionEvent("L", "X-PERP", 5.0, 100.0, 2),
    ])  # fmt: skip
    snap = take_snapshot(book)
    down, up = distances(snap, "X")
    assert (down[0], up[0]) == (0.0, 0.0)
    m = liquidation_map(snap, [-0.1, 0.0, 0.1])
    # -10%: E = 5 + 5*(90-100) = -45 <= MM 4.5: liquidatable, notional 450.
    #   0%: E = 5 = MM: liquidatable, notional 500.
    # +10%: E = 5 + 5*10 = 55 > MM 5.5: back above water.
    np.testing.assert_allclose(m.notional[0], [450.0, 500.0, 0.0])
    np.testing.assert_array_equal(m.accounts[0], [1, 1, 0])


# ---------------------------------------------------------------- random books


def amounts(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Figures to four decimals, as a venue reports them."""
    return st.integers(min_value=round(lo * 1e4), max_value=round(hi * 1e4)).map(lambda k: k / 1e4)


@st.composite
def random_books(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = [Tick(s, p, 1) for s, p in MARKS.items()]
    n = draw(st.integers(min_value=1, max_value=6))
    for i in range(n):
        acc = f"A{i}"
        held = draw(st.lists(st.sampled_from(INSTRUMENTS), min_size=1, max_size=4, unique=True))
        for sym in held:
            notional = draw(amounts(50.0, 30000.0))
            side = draw(st.sampled_from([1.0, -1.0]))
            drift = draw(amounts(-0.2, 0.2))
            mark = MARKS[sym]
            events.append(PositionEvent(acc, sym, side * notional / mark, mark * (1 + drift), 2))
        events.append(BalanceEvent(acc, "USDT", draw(amounts(-500.0, 8000.0)), 2))
        if draw(st.booleans()):
            events.append(BalanceEvent(acc, "BTC", draw(amounts(-5.0, 30.0)), 2))
        if draw(st.booleans()):
            events.append(BalanceEvent(acc, "ETH", draw(amounts(0.0, 300.0)), 2))
    return events  # fmt: skip


def _none_or(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_books())
def test_vectorised_distances_equal_the_per_account_root_finder(events: list[Event]) -> None:
    book = build(RANDOM, events)
    snap = take_snapshot(book)
    vec = {u: distances(snap, u) for u in RANDOM.underlyings}
    for a in range(book.n_accounts):
        want = scalar_distances(book, a, book.positions_of(a))
        for u, d in want.items():
            got = (_none_or(vec[u][0][a]), _none_or(vec[u][1][a]))
            for g, w in zip(got, (d["down"], d["up"]), strict=True):
                if w is None:
                    assert g is None, (book.account_ids[a], u, got, d)
                else:
                    assert g == pytest.approx(w, rel=1e-9, abs=1e-9), (book.account_ids[a], u)


def _moved_book(events: list[Event], underlying: str, move: float) -> MarginBook:
    """The same book re-run with every symbol of the underlying moved by ``move``."""
    book = build(RANDOM, events)
    on_u = [s for s, i in enumerate(RANDOM.instruments) if i.underlying == underlying]
    on_u += [RANDOM.asset_price_sym[k] for k, a in enumerate(RANDOM.assets)
             if a.underlying == underlying and RANDOM.asset_price_sym[k] >= 0]  # fmt: skip
    for s in on_u:
        book.apply_tick(int(s), MARKS[RANDOM.symbols[s]] * (1.0 + move), 3)
    return book


def _rerun(book: MarginBook) -> tuple[float, int, float]:
    """Liquidatable cross notional and accounts, and the smallest |E - MM| relative
    to the account's size (how close the nearest account is to a tie)."""
    eq, mm = book.equity, book.maintenance_margin
    has = book.cross_positions > 0
    liq = has & (book.margin_ratio >= 1.0)
    notional = np.zeros(book.n_accounts)
    for p in book.alive_positions():
        if int(book.pos_i[P_MODE, p]) == MODE_CROSS:
            a = int(book.pos_i[P_ACCT, p])
            s = int(book.pos_i[P_SYM, p])
            notional[a] += abs(float(book.pos_f[P_QTY, p])) * float(book.sym_price[s])
    scale = 1.0 + notional + np.abs(book.wallet_balance)
    gap = np.abs(eq - mm)[has] / scale[has]
    return float(notional[liq].sum()), int(liq.sum()), float(gap.min()) if gap.size else 1.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    random_books(),
    st.sampled_from(["BTC", "ETH", "SOL"]),
    st.lists(st.integers(min_value=-30, max_value=30), min_size=1, max_size=4, unique=True),
)
def test_map_agrees_with_rerunning_the_book_at_sampled_grid_points(
    events: list[Event], underlying: str, points: list[int]
) -> None:
    m = liquidation_map(take_snapshot(build(RANDOM, events)))
    for k in points:
        x = k / 100
        want_notional, want_accounts, gap = _rerun(_moved_book(events, underlying, x))
        assume(gap > 1e-9)  # an account exactly at its liquidation point is a coin toss
        got_notional, got_accounts = m.at(underlying, x)
        assert got_accounts == want_accounts, (underlying, x)
        assert got_notional == pytest.approx(want_notional, rel=1e-9, abs=1e-6), (underlying, x)
