"""The cascade on books small enough to compute by hand."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from monitor.book import MarginBook
from monitor.cascade import ImpactModel, Scenario, price_moves, run_cascade, take_snapshot
from monitor.events import BalanceEvent, Event, PositionEvent, Tick
from monitor.instruments import RiskParams, parse_instruments

# One bracket at 5% everywhere keeps the arithmetic readable: MM = 0.05 * notional.
HAND: dict[str, Any] = {
    "assets": {
        "USDT": {"price": 1.0},
        "BTC": {"price_symbol": "BTC", "haircut": 0.1},
    },
    "instruments": {
        "BTC-PERP": {"underlying": "BTC", "brackets": [[0, 0.05]], "depth_usd": 9000.0,
                     "impact_k": 0.5},
        "ETH-PERP": {"underlying": "ETH", "brackets": [[0, 0.05]], "depth_usd": 10000.0,
                     "impact_k": 0.5},
    },
}  # fmt: skip


def params(**depths: float) -> RiskParams:
    data = {**HAND, "instruments": {s: dict(t) for s, t in HAND["instruments"].items()}}
    for sym, depth in depths.items():
        inst = data["instruments"][sym.replace("_", "-")]
        if math.isinf(depth):
            del inst["depth_usd"]  # the default: infinitely deep, no impact
        else:
            inst["depth_usd"] = depth
    return parse_instruments(data, source="tests")


def book_of(p: RiskParams, events: list[Event]) -> MarginBook:
    book = MarginBook(p)
    for ev in events:
        assert book.apply(ev) is None
    return book


def pos(account: str, symbol: str, qty: float, entry: float, **kw: object) -> PositionEvent:
    return PositionEvent(account, symbol, qty, entry, 2, **kw)  # type: ignore[arg-type]


def usdt(account: str, amount: float) -> BalanceEvent:
    return BalanceEvent(account, "USDT", amount, 2)


# Marks: BTC-PERP 100, ETH-PERP 10.
# A: 60 USDT; long 10 BTC-PERP @ 100 (notional 1000); long 100 ETH-PERP @ 9 (notional
#    1000, uPnL +100). E = 60 + 0 + 100 = 160, MM = 50 + 50 = 100: MR 0.625.
# B: 120 USDT; long 100 ETH-PERP @ 10. E = 120, MM = 50: MR 0.42. ETH only.
# C: 100 USDT; short 10 ETH-PERP @ 10. Gains as ETH falls: never liquidated here.
# D: 15 USDT; long 20 ETH-PERP @ 10. E = 15, MM = 10: MR 0.67. ETH only.
CROSS_BOOK: list[Event] = [
    Tick("BTC-PERP", 100.0, 1),
    Tick("ETH-PERP", 10.0, 1),
    usdt("A", 60.0), pos("A", "BTC-PERP", 10.0, 100.0), pos("A", "ETH-PERP", 100.0, 9.0),
    usdt("B", 120.0), pos("B", "ETH-PERP", 100.0, 10.0),
    usdt("C", 100.0), pos("C", "ETH-PERP", -10.0, 10.0),
    usdt("D", 15.0), pos("D", "ETH-PERP", 20.0, 10.0),
]  # fmt: skip


def ids(book: MarginBook, slots: np.ndarray) -> list[str]:
    return sorted(book.account_ids[int(a)] for a in slots)


def test_btc_shock_liquidates_a_mixed_account_whose_eth_sale_liquidates_eth_only_accounts() -> None:
    book = book_of(params(), CROSS_BOOK)
    r = run_cascade(take_snapshot(book), {"BTC": -0.10}, impact="linear")
    assert [rd.round for rd in r.rounds] == [0, 1]

    # Round 0 at BTC 100 * 0.9 = 90, ETH 10.
    # A: E = 60 + 10*(90-100) + 100*(10-9) = 60 - 100 + 100 = 60;
    #    MM = 0.05*900 + 0.05*1000 = 95 >= 60: liquidated. B, C, D unaffected by BTC.
    r0 = r.rounds[0]
    assert r0.prices["BTC-PERP"] == pytest.approx(90.0, rel=1e-12)
    assert r0.prices["ETH-PERP"] == pytest.approx(10.0, rel=1e-12)
    assert ids(book, r0.accounts) == ["A"]
    # A closes 10 BTC at 90 (sells 900) and 100 ETH at 10 (sells 1000).
    assert r0.notional_liquidated == pytest.approx({"BTC-PERP": 900.0, "ETH-PERP": 1000.0})
    assert r0.forced_flow == pytest.approx({"BTC-PERP": -900.0, "ETH-PERP": -1000.0})
    # Its ETH long was winning (uPnL +100): healthy notional destroyed; the BTC leg lost.
    assert r0.healthy_notional_destroyed == pytest.approx({"BTC-PERP": 0.0, "ETH-PERP": 1000.0})
    assert r0.bad_debt == 0.0  # E = 60 > 0
    # A's culprit is BTC (uPnL -100), so all of its closed notional started in BTC:
    # spillover[BTC][BTC] = 900, spillover[BTC][ETH] = 1000.
    assert r.underlyings == ("BTC", "ETH")
    np.testing.assert_allclose(r0.spillover, [[900.0, 1000.0], [0.0, 0.0]])
    # Linear impact: BTC -900/9000 = -10%, ETH -1000/10000 = -10%.
    assert r0.price_impact == pytest.approx({"BTC-PERP": -0.1, "ETH-PERP": -0.1})

    # Round 1 at BTC 90*0.9 = 81, ETH 10*0.9 = 9.
    # B: E = 120 + 100*(9-10) = 20, MM = 0.05*900 = 45: liquidated.
    # D: E = 15 + 20*(9-10) = -5, MM = 0.05*180 = 9: liquidated, 5 of bad debt.
    # C: E = 100 + 10*(10-9) = 110, MM = 4.5: survives.
    r1 = r.rounds[1]
    assert r1.prices["BTC-PERP"] == pytest.approx(81.0, rel=1e-12)
    assert r1.prices["ETH-PERP"] == pytest.approx(9.0, rel=1e-12)
    assert ids(book, r1.accounts) == ["B", "D"]
    # B sells 100 * 9 = 900, D sells 20 * 9 = 180: 1080 of ETH.
    assert r1.notional_liquidated == pytest.approx({"BTC-PERP": 0.0, "ETH-PERP": 1080.0})
    assert r1.healthy_notional_destroyed == pytest.approx({"BTC-PERP": 0.0, "ETH-PERP": 0.0})
    assert r1.bad_debt == pytest.approx(5.0)
    np.testing.assert_allclose(r1.spillover, [[0.0, 0.0], [0.0, 1080.0]])
    # Impact applies to all the forced flow so far, on top of the shock: ETH has seen
    # -1000 - 1080 = -2080, so 10 * (1 - 2080/10000) = 7.92, a move of 7.92/9 - 1 = -12%
    # from round 1's mark. BTC saw no more flow: it stays at 81. Then nobody falls:
    # C at 7.92: E = 100 + 10*(10-7.92) = 120.8, MM = 0.05*79.2 = 3.96.
    assert r1.price_impact == pytest.approx({"BTC-PERP": 0.0, "ETH-PERP": -0.12})

    assert r.final_prices["BTC-PERP"] == pytest.approx(81.0, rel=1e-12)
    assert r.final_prices["ETH-PERP"] == pytest.approx(7.92, rel=1e-12)
    assert r.final_moves == pytest.approx({"BTC": -0.19, "ETH": -0.208})
    # Amplification: final BTC move / shock = -0.19 / -0.10.
    assert r.amplification == pytest.approx(1.9)
    assert r.accounts_liquidated == 3
    assert r.notional_liquidated == pytest.approx(900.0 + 1000.0 + 1080.0)
    assert r.healthy_notional_destroyed == pytest.approx(1000.0)
    assert r.bad_debt == pytest.approx(5.0)
    np.testing.assert_allclose(r.spillover, [[900.0, 1000.0], [0.0, 1080.0]])
    assert r.stopped == "stable"
    assert r.pending_accounts == 0


def test_square_root_impact_moves_by_k_times_the_root_of_flow_over_depth() -> None:
    # Round 0 as above; sqrt impact on ETH: -0.5 * sqrt(1000/10000) = -0.158113...;
    # BTC: -0.5 * sqrt(900/9000) = the same move.
    book = book_of(params(), CROSS_BOOK)
    r = run_cascade(take_snapshot(book), {"BTC": -0.10}, impact="sqrt")
    move = -0.5 * math.sqrt(0.1)
    assert r.rounds[0].price_impact == pytest.approx({"BTC-PERP": move, "ETH-PERP": move})
    assert r.rounds[1].prices["ETH-PERP"] == pytest.approx(10.0 * (1.0 + move))
    assert r.rounds[1].prices["BTC-PERP"] == pytest.approx(90.0 * (1.0 + move))


def test_impact_depends_on_the_total_forced_flow_not_on_how_many_rounds_carried_it() -> None:
    # Round 1's sqrt move comes from the cumulative ETH flow. At ETH 10*(1-0.158) = 8.42
    # B (E = 120 - 158.1 < 0) and D fall: B sells 100 * 8.4189 = 841.89 and
    # D 20 * 8.4189 = 168.38, so the ETH price is 10 * (1 - 0.5 * sqrt(2010.27/10000)).
    book = book_of(params(), CROSS_BOOK)
    r = run_cascade(take_snapshot(book), {"BTC": -0.10}, impact="sqrt")
    mark1 = 10.0 * (1.0 - 0.5 * math.sqrt(0.1))
    assert r.rounds[1].notional_liquidated["ETH-PERP"] == pytest.approx(120.0 * mark1)
    total = 1000.0 + 120.0 * mark1
    assert r.final_prices["ETH-PERP"] == pytest.approx(10.0 * (1.0 - 0.5 * math.sqrt(total / 1e4)))


def test_impact_models_on_exact_numbers() -> None:
    flow = np.array([-1000.0, 2000.0, 0.0, -5.0])
    depth = np.array([4000.0, 8000.0, 100.0, np.inf])
    k = np.array([0.5, 0.5, 0.5, 0.5])
    # linear: -1000/4000 = -0.25; 2000/8000 = +0.25; no flow, no move; infinite depth, none.
    np.testing.assert_allclose(
        price_moves(ImpactModel.LINEAR, flow, depth, k), [-0.25, 0.25, 0.0, 0.0]
    )
    # sqrt: -0.5*sqrt(1000/4000) = -0.25; +0.5*sqrt(2000/8000) = +0.25.
    np.testing.assert_allclose(
        price_moves(ImpactModel.SQRT, flow, depth, k), [-0.25, 0.25, 0.0, 0.0]
    )


def test_a_flow_larger_than_the_depth_cannot_push_a_price_to_zero() -> None:
    moves = price_moves(ImpactModel.LINEAR, np.array([-5e9]), np.array([1e9]), np.array([1.0]))
    assert -1.0 < moves[0] < 0.0


def test_infinite_depth_stops_after_round_zero() -> None:
    p = params(BTC_PERP=math.inf, ETH_PERP=math.inf)
    r = run_cascade(take_snapshot(book_of(p, CROSS_BOOK)), {"BTC": -0.10})
    assert len(r.rounds) == 1
    assert r.accounts_liquidated == 1  # A only
    assert r.final_prices["BTC-PERP"] == pytest.approx(90.0)
    assert r.final_prices["ETH-PERP"] == pytest.approx(10.0)
    assert r.amplification == pytest.approx(1.0)


def test_round_limit_stops_the_cascade_and_counts_who_would_fall_next() -> None:
    r = run_cascade(take_snapshot(book_of(params(), CROSS_BOOK)), {"BTC": -0.10}, max_rounds=1)
    assert len(r.rounds) == 1
    assert r.stopped == "max_rounds"
    assert r.pending_accounts == 2  # B and D, at ETH 9
    # The last round's flow still moved the prices: ETH 10 * (1 - 1000/10000).
    assert r.final_prices["ETH-PERP"] == pytest.approx(9.0)


def test_a_shock_that_liquidates_nobody_reports_round_zero_only() -> None:
    r = run_cascade(take_snapshot(book_of(params(), CROSS_BOOK)), {"BTC": -0.01})
    # A at BTC 99: E = 60 - 10 + 100 = 150, MM = 49.5 + 50: healthy.
    assert len(r.rounds) == 1
    assert r.rounds[0].accounts_liquidated == 0
    assert r.notional_liquidated == 0.0
    assert r.amplification == pytest.approx(1.0)
    assert r.stopped == "stable"


def test_collateral_moves_with_its_underlying_and_counts_in_the_attribution() -> None:
    # G holds 0.5 BTC (0.5 * 100 * 0.9 = 45 after the 10% haircut) and is short
    # 20 ETH-PERP @ 10 at mark 10 (uPnL 0, notional 200, MM 10): E = 45, MR 0.22.
    # At BTC -80%: collateral 0.5 * 20 * 0.9 = 9 < MM 10: liquidated by its
    # collateral alone, with no losing position.
    p = params(BTC_PERP=math.inf, ETH_PERP=math.inf)
    book = book_of(p, [
        Tick("BTC-PERP", 100.0, 1), Tick("BTC", 100.0, 1), Tick("ETH-PERP", 10.0, 1),
        BalanceEvent("G", "BTC", 0.5, 2), pos("G", "ETH-PERP", -20.0, 10.0),
    ])  # fmt: skip
    r = run_cascade(take_snapshot(book), {"BTC": -0.80})
    r0 = r.rounds[0]
    assert r0.prices["BTC"] == pytest.approx(20.0)
    assert r0.accounts_liquidated == 1
    # No losing position: the shortfall started in BTC, where its collateral lost
    # 0.5 * (20 - 100) * 0.9 = -36. It buys back 200 of ETH.
    np.testing.assert_allclose(r0.spillover, [[0.0, 200.0], [0.0, 0.0]])
    assert r0.forced_flow["ETH-PERP"] == pytest.approx(200.0)
    # G's short was not losing (uPnL 0): healthy notional destroyed.
    assert r0.healthy_notional_destroyed["ETH-PERP"] == pytest.approx(200.0)


def test_isolated_positions_stay_out_of_the_cross_cascade() -> None:
    p = params()
    book = book_of(p, [
        Tick("BTC-PERP", 100.0, 1),
        usdt("I", 1.0),
        pos("I", "BTC-PERP", 10.0, 100.0, margin_mode="isolated", isolated_margin=60.0),
    ])  # fmt: skip
    snap = take_snapshot(book)
    assert snap.n_positions == 0
    r = run_cascade(snap, {"BTC": -0.5})
    assert r.accounts_liquidated == 0


def test_the_live_book_is_never_modified() -> None:
    book = book_of(params(), CROSS_BOOK)
    before = (book.pos_f.copy(), book.pos_i.copy(), book.bal.copy(), book.sym_price.copy(),
              book.acc_f.copy())  # fmt: skip
    snap = take_snapshot(book)
    qty = snap.qty.copy()
    run_cascade(snap, {"BTC": -0.10, "ETH": -0.05})
    after = (book.pos_f, book.pos_i, book.bal, book.sym_price, book.acc_f)
    for x, y in zip(before, after, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(snap.qty, qty)


def test_json_names_accounts_and_keeps_only_non_zero_spillover_cells() -> None:
    book = book_of(params(), CROSS_BOOK)
    r = run_cascade(take_snapshot(book), Scenario((("BTC", -0.1),)))
    doc = r.to_json(with_accounts=True)
    assert [rd["accounts"] for rd in doc["rounds"]] == [["A"], ["B", "D"]]
    assert doc["rounds"][1]["prices"]["ETH-PERP"] == pytest.approx(9.0)
    assert doc["spillover"] == {
        "BTC": {"BTC": pytest.approx(900.0), "ETH": pytest.approx(1000.0)},
        "ETH": {"ETH": pytest.approx(1080.0)},
    }
    assert doc["shocks"] == {"BTC": -0.1}
    assert doc["amplification"] == pytest.approx(1.9)


def test_equity_at_or_below_zero_is_liquidatable_even_without_maintenance_margin() -> None:
    from monitor.cascade import liquidation_map
    from monitor.cascade.snapshot import base_figures
    from monitor.instruments.model import Asset, Instrument, derive_brackets

    # A zero-rate bracket: no maintenance margin at any notional (the instruments
    # file asks for rates above 0; the rule does not lean on that).
    free = Instrument("FREE-PERP", "FREE", derive_brackets([(0.0, 0.0)]), depth_usd=1e9)
    p = RiskParams((free,), (Asset("USDT", price=1.0),))
    # A: 100 USDT, long 10 FREE-PERP @ 100: E = 100 + 1000 x, MM = 0 at every move x.
    # B: 285 USDT, the same position: E = 285 + 1000 x.
    # C: 50 USDT, long 10 @ 110: E = 50 - 100 = -50 already.
    book = book_of(p, [
        Tick("FREE-PERP", 100.0, 1),
        usdt("A", 100.0), pos("A", "FREE-PERP", 10.0, 100.0),
        usdt("B", 285.0), pos("B", "FREE-PERP", 10.0, 100.0),
        usdt("C", 50.0), pos("C", "FREE-PERP", 10.0, 110.0),
    ])  # fmt: skip
    snap = take_snapshot(book)
    assert ids(book, np.flatnonzero(base_figures(snap).liquidatable)) == ["C"]
    r = run_cascade(snap, {"FREE": -0.2})
    # -20%: A's equity is 100 - 200 = -100, C's -50 - 200 = -250; B keeps 85
    assert ids(book, r.rounds[0].accounts) == ["A", "C"]
    assert r.rounds[0].bad_debt == pytest.approx(350.0)
    m = liquidation_map(snap)
    u = m.underlyings.index("FREE")
    at = {round(float(x), 2): int(n) for x, n in zip(m.moves, m.accounts[u], strict=True)}
    assert (at[0.0], at[-0.09], at[-0.1], at[-0.28], at[-0.29]) == (1, 1, 2, 2, 3)
    assert run_cascade(snap, {"FREE": 0.06}).rounds[0].accounts.size == 0  # C back above 0
