"""Every formula of DESIGN.md section 4 against hand-computed figures.

Brackets used (tests/conftest.py): BTC-PERP [0, 1%], [1000, 2%], [5000, 5%];
maintenance amounts cum = 0, 1000*(0.02-0.01) = 10, 10 + 5000*(0.05-0.02) = 160.
"""

from __future__ import annotations

import math

import pytest

from monitor.book import MarginBook
from monitor.events import BalanceEvent, PositionEvent, Tick
from monitor.instruments import RiskParams
from monitor.instruments.model import derive_brackets
from monitor.risk.levels import Status, Thresholds
from monitor.risk.liquidation import MovingLeg, distance_to_liquidation, liquidation_price
from monitor.risk.report import account_report


def pos(
    account: str, symbol: str, qty: float, entry: float, ts: int = 1, **kw: object
) -> PositionEvent:
    return PositionEvent(account, symbol, qty, entry, ts, **kw)  # type: ignore[arg-type]


def test_maintenance_amounts_are_derived_from_the_brackets() -> None:
    b = derive_brackets([(0, 0.01), (1000, 0.02), (5000, 0.05)])
    assert [x.cum for x in b] == [0.0, 10.0, 160.0]


@pytest.mark.parametrize(
    ("price", "mmr", "mm"),
    [
        (999.0, 0.01, 9.99),  # 999 * 1%
        (1000.0, 0.02, 10.0),  # exactly on the floor: next bracket, 1000*2% - 10
        (4999.0, 0.02, 89.98),  # 4999*2% - 10
        (5000.0, 0.05, 90.0),  # 5000*5% - 160: continuous across the floor
        (8000.0, 0.05, 240.0),  # 8000*5% - 160
    ],
)
def test_position_maintenance_margin_at_bracket_boundaries(
    small_params: RiskParams, price: float, mmr: float, mm: float
) -> None:
    book = MarginBook(small_params)
    book.apply(pos("A", "BTC-PERP", 1.0, 1000.0))
    book.apply(Tick("BTC-PERP", price, 2))
    assert book.maintenance_margin[0] == pytest.approx(mm, abs=1e-9)
    row = account_report(book, 0)["positions"][0]
    assert row["mmr"] == mmr
    assert row["maintenance_margin"] == pytest.approx(mm, abs=1e-9)


def test_short_position_gains_when_price_falls_and_its_liquidation_price_is_above(
    small_params: RiskParams,
) -> None:
    book = MarginBook(small_params)
    book.apply(BalanceEvent("A", "USDT", 100.0, 1))
    book.apply(pos("A", "BTC-PERP", -2.0, 400.0))
    book.apply(Tick("BTC-PERP", 390.0, 2))
    r = account_report(book, 0)
    p = r["positions"][0]
    assert p["unrealized_pnl"] == pytest.approx(20.0)  # -2 * (390 - 400)
    assert p["notional"] == pytest.approx(780.0)
    assert p["maintenance_margin"] == pytest.approx(7.8)  # 780 * 1%
    # LP = (WB + cum - side*Q*EP) / (Q*mmr - side*Q) = (100 + 0 + 800) / (0.02 + 2) = 445.544...
    # notional at LP = 891.09 < 1000: first bracket, consistent
    assert p["liquidation_price"] == pytest.approx(900.0 / 2.02)
    assert r["equity"] == pytest.approx(120.0)
    assert r["margin_ratio"] == pytest.approx(7.8 / 120.0)


def test_liquidation_price_picks_the_bracket_its_own_notional_falls_in() -> None:
    b = derive_brackets([(0, 0.01), (1000, 0.02), (5000, 0.05)])
    # long 10 @ 1000, wallet 1500: bracket 3 (cum 160): (1500 + 160 - 10000)/(0.5 - 10)
    # = 877.89..., notional 8778.9 >= 5000: consistent with the 5% bracket
    lp = liquidation_price(10.0, 1000.0, 1500.0, 0.0, 0.0, b)
    assert lp == pytest.approx((1500 + 160 - 10000) / (0.5 - 10))
    # at that price equity equals maintenance margin
    assert lp is not None
    equity = 1500 + 10 * (lp - 1000)
    assert equity == pytest.approx(10 * lp * 0.05 - 160)


def test_a_long_with_enough_collateral_has_no_liquidation_price() -> None:
    b = derive_brackets([(0, 0.01)])
    # (WB - Q*EP) / (Q*mmr - Q) = (2000 - 1000) / (0.01 - 1) < 0: never liquidated
    assert liquidation_price(1.0, 1000.0, 2000.0, 0.0, 0.0, b) is None
    assert liquidation_price(0.0, 1000.0, 2000.0, 0.0, 0.0, b) is None


def test_isolated_position_is_its_own_unit(small_params: RiskParams) -> None:
    book = MarginBook(small_params)
    book.apply(BalanceEvent("A", "USDT", 50.0, 1))
    book.apply(pos("A", "ETH-PERP", 1.0, 100.0, margin_mode="isolated", isolated_margin=10.0))
    book.apply(Tick("ETH-PERP", 92.0, 2))
    r = account_report(book, 0)
    assert r["positions"][0]["healthy"] is None  # defined for cross positions only
    # the cross part does not see the isolated position
    assert r["unrealized_pnl"] == 0.0
    assert r["maintenance_margin"] == 0.0
    assert r["status"] == "healthy"
    p = r["positions"][0]
    # isolated equity 10 + (92 - 100) = 2; MM 92 * 2% = 1.84; ratio 0.92 -> critical
    assert p["margin_ratio"] == pytest.approx(1.84 / 2.0)
    assert p["status"] == "critical"
    # LP = (10 - 100) / (0.02 - 1) = 91.836...
    assert p["liquidation_price"] == pytest.approx(90.0 / 0.98)
    assert p["contagion_shift"] == 0.0


def test_collateral_counts_after_its_haircut(small_params: RiskParams) -> None:
    book = MarginBook(small_params)
    book.apply(BalanceEvent("A", "BTC", 0.5, 1))
    book.apply(BalanceEvent("A", "USDT", -100.0, 1))  # a debt
    assert book.wallet_balance[0] == -100.0  # BTC unpriced yet: counts for nothing
    book.apply(Tick("BTC", 1000.0, 2))
    # 0.5 * 1000 * (1 - 0.1) - 100
    assert book.wallet_balance[0] == pytest.approx(350.0)


def test_equity_at_or_below_zero_with_positions_is_liquidatable(small_params: RiskParams) -> None:
    book = MarginBook(small_params)
    book.apply(BalanceEvent("A", "USDT", 10.0, 1))
    book.apply(pos("A", "SOL-PERP", 1.0, 100.0))
    book.apply(Tick("SOL-PERP", 85.0, 2))  # equity 10 - 15 = -5
    assert book.equity[0] == pytest.approx(-5.0)
    assert math.isinf(book.margin_ratio[0])
    assert book.status[0] == Status.LIQUIDATABLE
    r = account_report(book, 0)
    assert r["margin_ratio"] is None
    assert r["status"] == "liquidatable"
    assert r["distance_to_liquidation"]["SOL"] == {"down": 0.0, "up": 0.0}


def test_a_flip_from_long_to_short_replaces_the_position(small_params: RiskParams) -> None:
    book = MarginBook(small_params)
    book.apply(BalanceEvent("A", "USDT", 1000.0, 1))
    book.apply(pos("A", "BTC-PERP", 2.0, 100.0, ts=1))
    book.apply(Tick("BTC-PERP", 110.0, 2))
    assert book.unrealized_pnl[0] == pytest.approx(20.0)
    book.apply(pos("A", "BTC-PERP", -3.0, 110.0, ts=3))
    book.apply(Tick("BTC-PERP", 100.0, 4))
    assert book.unrealized_pnl[0] == pytest.approx(30.0)  # -3 * (100 - 110)
    assert book.maintenance_margin[0] == pytest.approx(3.0)  # 300 * 1%
    assert book.n_positions == 1


def test_a_close_frees_the_slot_and_a_reopen_starts_fresh(small_params: RiskParams) -> None:
    book = MarginBook(small_params)
    book.apply(pos("A", "BTC-PERP", 1.0, 100.0, ts=1))
    book.apply(Tick("BTC-PERP", 90.0, 2))
    book.apply(pos("A", "BTC-PERP", 0.0, 0.0, ts=3))
    assert book.n_positions == 0
    assert (book.unrealized_pnl[0], book.maintenance_margin[0]) == (0.0, 0.0)
    assert book.apply(pos("A", "BTC-PERP", 5.0, 100.0, ts=2)) is not None  # older than the close
    assert book.apply(pos("A", "BTC-PERP", 5.0, 95.0, ts=4)) is None
    assert book.n_positions == 1
    assert book.unrealized_pnl[0] == pytest.approx(-25.0)  # 5 * (90 - 95)


def test_contagion_shift_culprits_and_victims(small_params: RiskParams) -> None:
    book = MarginBook(small_params)
    book.apply(BalanceEvent("A", "USDT", 100.0, 1))
    book.apply(pos("A", "BTC-PERP", 1.0, 500.0, sub_account="desk-1"))
    book.apply(pos("A", "ETH-PERP", -10.0, 50.0, sub_account="desk-2"))
    book.apply(Tick("BTC-PERP", 520.0, 2))  # desk-1 +20
    book.apply(Tick("ETH-PERP", 58.5, 2))  # desk-2 -85
    r = account_report(book, 0)
    # equity 100 + 20 - 85 = 35; MM 520*1% + 585*2% = 5.2 + 11.7 = 16.9; ratio 0.4829
    assert r["equity"] == pytest.approx(35.0)
    assert r["maintenance_margin"] == pytest.approx(16.9)
    btc = r["positions"][0]
    # with the ETH loss: (100 - 11.7 - 85 - 500) / (0.01 - 1); alone: (100 - 500) / (0.01 - 1)
    assert btc["liquidation_price"] == pytest.approx((100 - 11.7 - 85 - 500) / -0.99)
    assert btc["standalone_liquidation_price"] == pytest.approx(400 / 0.99)
    assert btc["contagion_shift"] == pytest.approx(btc["liquidation_price"] - 400 / 0.99)
    assert r["contagion"]["culprits"] == [
        {"symbol": "ETH-PERP", "sub_account": "desk-2", "unrealized_pnl": pytest.approx(-85.0)}
    ]
    assert r["contagion"]["victims"] == []  # healthy level: nothing at risk yet
    book.apply(Tick("ETH-PERP", 59.3, 3))  # desk-2 -93: equity 27, MM 5.2 + 11.86 = 17.06
    r = account_report(book, 0)
    assert r["status"] == "healthy"  # 0.632
    book.apply(Tick("ETH-PERP", 60.2, 4))  # equity 18, MM 5.2 + 12.04 = 17.24 -> 0.958
    r = account_report(book, 0)
    assert r["status"] == "critical"
    assert r["contagion"]["healthy_notional_at_risk"] == pytest.approx(520.0)
    assert [v["symbol"] for v in r["contagion"]["victims"]] == ["BTC-PERP"]
    assert r["contagion"]["culprit_sub_accounts"][0]["sub_account"] == "desk-2"


def test_distance_to_liquidation_moves_instrument_and_collateral_together() -> None:
    b = derive_brackets([(0, 0.01)])
    # long 1 @ 100 marked at 100, collateral worth 10 on the same underlying, 5 fixed:
    # f(x) = 5 + 10(1+x) + 100x - 1(1+x) = 14 + 109x -> root at x = -14/109
    down, up = distance_to_liquidation(5.0, 0.0, 10.0, [MovingLeg(1.0, 100.0, 100.0, b)])
    assert down == pytest.approx(-14 / 109)
    assert up is None


def test_distance_to_liquidation_across_a_bracket_kink() -> None:
    b = derive_brackets([(0, 0.01), (1000, 0.02), (5000, 0.05)])
    # short 10 @ 100 at mark 100, wallet 100: f(x) = 100 - 1000x - MM(1000(1+x))
    # at x=0: MM = 1000*2% - 10 = 10 -> f = 90; bracket 2 until notional 5000 (x=4)
    # f(x) = 100 - 1000x - (20(1+x) - 10) = 90 - 1020x -> root x = 90/1020
    down, up = distance_to_liquidation(100.0, 0.0, 0.0, [MovingLeg(-10.0, 100.0, 100.0, b)])
    assert up == pytest.approx(90 / 1020)
    assert down is None


def test_distance_to_liquidation_uses_the_configured_liquidatable_threshold() -> None:
    b = derive_brackets([(0, 0.01)])
    # long 1 @ 100 at mark 100, fixed equity 10: E(x) = 10 + 100x, MM(x) = 1 + x.
    # MR >= 1: 10 + 100x = 1 + x -> x = -9/99; MR >= 0.5: 10 + 100x = 2(1 + x) -> -8/98
    leg = [MovingLeg(1.0, 100.0, 100.0, b)]
    assert distance_to_liquidation(10.0, 0.0, 0.0, leg)[0] == pytest.approx(-9 / 99)
    down, _ = distance_to_liquidation(10.0, 0.0, 0.0, leg, 0.5)
    assert down == pytest.approx(-8 / 98)
    assert (1 + down) / (10 + 100 * down) == pytest.approx(0.5)  # MR at the root


def test_an_account_liquidatable_already_is_at_distance_zero_whatever_it_holds() -> None:
    # nothing on this underlying moves it, but equity is below zero now
    assert distance_to_liquidation(-1.0, 0.0, 0.0, []) == (0.0, 0.0)
    # nothing moves and it is healthy: no move of this underlying liquidates it
    assert distance_to_liquidation(10.0, 1.0, 0.0, []) == (None, None)


def test_past_the_last_floor_the_distance_uses_the_exact_slope() -> None:
    """A small debt in an asset against a large equity: the gap changes by 1e-9 of
    itself per unit move, which differencing the gap would get wrong by ~1e-7."""
    debt = -3.8e-8
    up = distance_to_liquidation(33.0, 1.5625e-4, debt, [])[1]
    # 33 + debt (1 + x) - 1.5625e-4 = 0
    assert up == pytest.approx((33.0 - 1.5625e-4) / -debt - 1.0, rel=1e-12)


def test_a_vanishing_position_has_no_distance_rather_than_a_nan() -> None:
    """Its floors lie beyond any move a float can express: no kinks, no root."""
    b = derive_brackets([(0, 0.01), (1000, 0.02)])
    leg = [MovingLeg(1.58e-306, 4.0, 4.0, b)]
    assert distance_to_liquidation(1.0, 0.0, 0.0, leg) == (None, None)


def test_the_report_measures_distance_to_the_configured_threshold(
    small_params: RiskParams,
) -> None:
    book = MarginBook(small_params, Thresholds(0.3, 0.4, 0.5))
    book.apply(BalanceEvent("A", "USDT", 10.0, 1))
    book.apply(pos("A", "SOL-PERP", 1.0, 100.0))  # E = 10, MM = 5% of 100(1+x)
    down = account_report(book, 0)["distance_to_liquidation"]["SOL"]["down"]
    # 10 + 100x = 2 * 5(1 + x) -> x = 0 / 90: already at MR 0.5
    assert down == 0.0
    book.apply(BalanceEvent("A", "USDT", 20.0, 2))  # 20 + 100x = 10(1 + x) -> x = -1/9
    down = account_report(book, 0)["distance_to_liquidation"]["SOL"]["down"]
    assert down == pytest.approx(-1 / 9)


def test_an_open_position_on_no_equity_is_liquidatable_however_small(
    small_params: RiskParams,
) -> None:
    """Open positions, not a positive maintenance sum, decide the infinite ratio:
    incremental sums can leave a rounding residue where the exact figure is 0."""
    book = MarginBook(small_params)
    book.apply(pos("A", "BTC-PERP", 1e-190, 1.0))
    assert book.equity[0] == 0.0
    assert math.isinf(book.margin_ratio[0])
    assert book.status[0] == Status.LIQUIDATABLE
    book.apply(pos("A", "BTC-PERP", 0.0, 0.0, ts=2))
    assert book.margin_ratio[0] == 0.0
    assert book.status[0] == Status.HEALTHY
