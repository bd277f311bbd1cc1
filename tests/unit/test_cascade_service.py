"""Gauges, the ``cascade`` alert and the daemon's market jobs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from monitor.book import MarginBook
from monitor.cascade import (
    CascadeWatch,
    MarketConfig,
    MarketMetrics,
    MarketRisk,
    liquidation_map,
    run_cascade,
    take_snapshot,
)
from monitor.events import BalanceEvent, PositionEvent, Tick
from monitor.instruments import RiskParams, parse_instruments


def params() -> RiskParams:
    return parse_instruments(
        {
            "assets": {"USDT": {"price": 1.0}},
            "instruments": {
                "BTC-PERP": {"underlying": "BTC", "brackets": [[0, 0.05]], "depth_usd": 9000.0},
                "ETH-PERP": {"underlying": "ETH", "brackets": [[0, 0.05]], "depth_usd": 1e4},
            },
        },
        source="tests",
    )


def book() -> MarginBook:
    """The mixed account A of the engine tests and one ETH-only account B.

    A: 60 USDT, long 10 BTC @ 100, long 100 ETH @ 9 (mark 10). B: 120 USDT, long
    100 ETH @ 10. BTC -10% takes A down (E 60 <= MM 95); its ETH sale moves ETH
    -10% and takes B down (E 20 <= MM 45)."""
    b = MarginBook(params())
    for ev in (
        Tick("BTC-PERP", 100.0, 1), Tick("ETH-PERP", 10.0, 1),
        BalanceEvent("A", "USDT", 60.0, 2), PositionEvent("A", "BTC-PERP", 10.0, 100.0, 2),
        PositionEvent("A", "ETH-PERP", 100.0, 9.0, 2),
        BalanceEvent("B", "USDT", 120.0, 2), PositionEvent("B", "ETH-PERP", 100.0, 10.0, 7),
    ):  # fmt: skip
        assert b.apply(ev) is None
    return b


def value(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def test_map_gauges_carry_underlying_and_fixed_move_labels() -> None:
    reg = CollectorRegistry()
    m = liquidation_map(take_snapshot(book()))
    MarketMetrics(reg).export_map(m)
    # A falls at BTC -6.32% (E = 160 + 1000x, MM = 100 + 50x): in at -10%, out at -5%.
    # At -10%: 10 * 90 + 100 * 10 = 1900.
    assert value(reg, "monitor_liquidation_map_notional", underlying="BTC", move="-10%") == (
        pytest.approx(1900.0)
    )
    assert value(reg, "monitor_liquidation_map_accounts", underlying="BTC", move="-10%") == 1
    assert value(reg, "monitor_liquidation_map_accounts", underlying="BTC", move="-5%") == 0
    labels = {
        s.labels["move"]
        for metric in reg.collect()
        if metric.name == "monitor_liquidation_map_accounts"
        for s in metric.samples
    }
    assert labels == {"-20%", "-10%", "-5%", "-2%", "-1%", "+1%", "+2%", "+5%", "+10%", "+20%"}


def test_cascade_gauges_by_shock() -> None:
    reg = CollectorRegistry()
    snap = take_snapshot(book())
    r = run_cascade(snap, {"BTC": -0.1})
    MarketMetrics(reg).export_cascade("BTC=-10%", r)
    # BTC: 100 * 0.9 * (1 - 900/9000) = 81: -19% / -10%.
    assert value(reg, "monitor_cascade_amplification", shock="BTC=-10%") == pytest.approx(1.9)
    # A: 900 + 1000; B at ETH 9: 900.
    assert value(reg, "monitor_cascade_liquidated_notional", shock="BTC=-10%") == (
        pytest.approx(2800.0)
    )
    assert value(reg, "monitor_cascade_liquidated_accounts", shock="BTC=-10%") == 2
    zero = run_cascade(snap, {"BTC": 0.0})
    MarketMetrics(reg2 := CollectorRegistry()).export_cascade("BTC=0%", zero)
    assert math.isnan(value(reg2, "monitor_cascade_amplification", shock="BTC=0%") or 0.0)


@dataclass
class Figures:
    """The figures of a cascade result the watch reads."""

    amplification: float | None
    notional_liquidated: float
    accounts_liquidated: int = 1
    bad_debt: float = 0.0
    healthy_notional_destroyed: float = 0.0


def test_cascade_alert_fires_once_per_crossing_with_hysteresis() -> None:
    watch = CascadeWatch(amplification_threshold=1.5, notional_threshold=1e6, clear_ratio=0.9)

    def observe(amp: float | None, notional: float, ts: int) -> str | None:
        alert = watch.observe("BTC=-10%", Figures(amp, notional), ts)  # type: ignore[arg-type]
        return None if alert is None else alert.state

    assert observe(1.2, 0.0, 1) is None
    assert observe(1.5, 0.0, 2) == "firing"  # at the threshold
    assert observe(1.9, 0.0, 3) is None  # still firing: no repeat
    assert observe(1.4, 0.0, 4) is None  # below 1.5 but not below 0.9 * 1.5 = 1.35
    assert observe(1.3, 0.0, 5) == "resolved"
    assert observe(1.0, 1e6, 6) == "firing"  # notional alone
    assert observe(None, 0.0, 7) == "resolved"  # a zero shock has no amplification


def test_cascade_alert_from_a_real_cascade_has_a_stable_id() -> None:
    snap = take_snapshot(book())
    big = run_cascade(snap, {"BTC": -0.1})  # amplification 1.9, notional 2800
    first = CascadeWatch(1.5, 1e6).observe("BTC=-10%", big, ts=10)
    assert first is not None and first.state == "firing"
    doc = first.to_json()
    assert (doc["kind"], doc["account"], doc["state"]) == ("cascade", "market", "firing")
    assert doc["cascade"]["shock"] == "BTC=-10%"
    assert doc["cascade"]["amplification"] == pytest.approx(1.9)
    assert doc["cascade"]["liquidated_notional"] == pytest.approx(2800.0)
    assert doc["healthy_notional_at_risk"] == pytest.approx(big.healthy_notional_destroyed)
    # Same scenario, transition and event time: same id (de-duplication downstream).
    again = CascadeWatch(1.5, 1e6).observe("BTC=-10%", big, ts=10)
    assert again is not None and again.id == first.id == doc["id"]
    later = CascadeWatch(1.5, 1e6).observe("BTC=-10%", big, ts=11)
    assert later is not None and later.id != first.id


def test_market_risk_runs_the_configured_jobs() -> None:
    reg = CollectorRegistry()
    cfg = MarketConfig(shocks=("BTC=-10%", "BTC=-1%,ETH=-1%"), cascade_notional_threshold=1e9)
    market = MarketRisk(params(), cfg, reg)
    snap = take_snapshot(book())
    m = market.refresh_map(snap)
    assert list(m.moves) == sorted(cfg.map_moves)
    report = market.run_cascades(snap)
    assert set(report.results) == {"BTC=-10%", "BTC=-1%,ETH=-1%"}
    # Only BTC=-10% amplifies past 1.5; the alert carries the book's event time.
    assert [(a.shock, a.state, a.ts) for a in report.alerts] == [("BTC=-10%", "firing", 7)]
    assert market.run_cascades(snap).alerts == []
    assert value(reg, "monitor_cascade_rounds", shock="BTC=-10%") == 2
