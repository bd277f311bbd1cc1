"""Trigger and event time of an alert are per account (the ticks of the symbols
it holds, its own events), never those of whatever else shared the batch; and
flood control counts per account and kind."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from monitor.alerts.config import AlertsConfig
from monitor.alerts.engine import AlertEngine
from monitor.alerts.model import Alert
from monitor.clock import ManualClock
from monitor.engine import Engine
from monitor.events import BalanceEvent, PositionEvent, Tick
from monitor.instruments import parse_instruments
from tests.conftest import SMALL

PARAMS = parse_instruments(SMALL, source="tests")

BOOK = [
    # A1: a loss on desk-2's ETH drags desk-1's profitable BTC position
    BalanceEvent("A1", "USDT", 1000.0, 1),
    PositionEvent("A1", "BTC-PERP", 0.1, 20000.0, 2, sub_account="desk-1"),
    PositionEvent("A1", "ETH-PERP", 10.0, 1500.0, 3, sub_account="desk-2"),
    # A2 only holds SOL, a symbol A1 has nothing to do with
    BalanceEvent("A2", "USDT", 25.0, 4),
    PositionEvent("A2", "SOL-PERP", 10.0, 20.0, 5),
    Tick("BTC-PERP", 21000.0, 6),
    Tick("ETH-PERP", 1500.0, 7),
    Tick("SOL-PERP", 20.0, 8),
]


def engine(config: AlertsConfig | None = None, *, live: bool = True) -> Engine:
    cfg = config or AlertsConfig(min_interval_s=0.0, stale_price_s=1e9)
    clock = ManualClock(1_700_000_000_000)
    alerts = AlertEngine(cfg, clock, CollectorRegistry())
    eng = Engine(PARAMS, clock, thresholds=cfg.thresholds(), alerts=alerts, live=live)
    with capture_logs():
        eng.apply(BOOK)
    return eng


def run(eng: Engine, *batches: list[Any]) -> list[Alert]:
    out: list[Alert] = []
    with capture_logs():
        for batch in batches:
            events = [e for e in batch if not isinstance(e, Tick)]
            ticks = [e for e in batch if isinstance(e, Tick)]
            out += eng.apply(events, ticks).alerts
    return out


def of(alerts: list[Alert], account: str) -> list[Alert]:
    return [a for a in alerts if a.account == account]


def test_the_trigger_is_the_accounts_own_tick_not_the_newest_of_the_batch() -> None:
    eng = engine()
    alerts = run(eng, [Tick("SOL-PERP", 19.0, 30), Tick("ETH-PERP", 1450.0, 20)])
    mine = of(alerts, "A1")
    assert [(a.kind, a.severity) for a in mine] == [
        ("margin", "critical"),
        ("contagion", "critical"),
    ]
    for a in mine:
        assert a.ts == 20 and a.trigger is not None
        assert (a.trigger.symbol, a.trigger.price, a.trigger.ts) == ("ETH-PERP", 1450.0, 20)


def test_the_newest_tick_among_the_accounts_symbols_is_the_trigger() -> None:
    eng = engine()
    alerts = run(eng, [Tick("ETH-PERP", 1450.0, 20), Tick("BTC-PERP", 20990.0, 21)])
    (a, _) = of(alerts, "A1")
    assert a.trigger is not None and (a.trigger.symbol, a.trigger.ts) == ("BTC-PERP", 21)
    assert a.ts == 21


def test_an_account_event_alone_gives_its_own_event_time_and_no_trigger() -> None:
    eng = engine()
    # a withdrawal takes A1 to critical; a SOL tick shares the batch
    alerts = run(eng, [BalanceEvent("A1", "USDT", 550.0, 40), Tick("SOL-PERP", 19.5, 50)])
    mine = of(alerts, "A1")
    assert mine and all(a.ts == 40 and a.trigger is None for a in mine)


def test_an_account_event_and_a_tick_of_its_symbol_give_the_tick_and_the_newer_time() -> None:
    eng = engine()
    alerts = run(eng, [BalanceEvent("A1", "USDT", 990.0, 45), Tick("ETH-PERP", 1450.0, 41)])
    (a, _) = of(alerts, "A1")
    assert a.trigger is not None and a.trigger.ts == 41 and a.ts == 45


def test_an_isolated_unit_is_triggered_by_its_own_symbol_only() -> None:
    eng = engine()
    run(eng, [PositionEvent("A1", "SOL-PERP", 1.0, 20.0, 9, "isolated", 2.0)])
    # SOL falls (the isolated unit liquidatable) while BTC ticks later in the batch
    alerts = run(eng, [Tick("SOL-PERP", 19.0, 60), Tick("BTC-PERP", 21010.0, 61)])
    (iso,) = [a for a in of(alerts, "A1") if a.isolated_symbol == "SOL-PERP"]
    assert iso.trigger is not None and iso.trigger.symbol == "SOL-PERP" and iso.ts == 60


def test_a_tick_priced_collateral_is_a_symbol_of_the_cross_part() -> None:
    eng = engine()
    run(eng, [BalanceEvent("A3", "BTC", 0.1, 10), Tick("BTC", 20000.0, 11)])
    run(eng, [PositionEvent("A3", "ETH-PERP", 5.0, 1500.0, 12), Tick("ETH-PERP", 1500.0, 13)])
    # BTC collateral loses value: A3 (holding no BTC position) turns critical
    alerts = run(eng, [Tick("BTC", 3000.0, 70), Tick("SOL-PERP", 20.0, 71)])
    mine = of(alerts, "A3")
    assert [a.severity for a in mine] == ["critical", "critical"]
    for a in mine:
        assert a.trigger is not None and (a.trigger.symbol, a.trigger.ts) == ("BTC", 70)


def test_going_live_blames_what_the_catch_up_applied() -> None:
    eng = engine(live=False)
    run(eng, [Tick("ETH-PERP", 1460.0, 80)], [Tick("ETH-PERP", 1450.0, 81)])
    run(eng, [Tick("SOL-PERP", 19.0, 90)])
    with capture_logs():
        alerts = eng.go_live()
    (a, _) = of(alerts, "A1")
    assert (a.severity, a.ts) == ("critical", 81)
    assert a.trigger is not None and a.trigger.price == 1450.0


def test_a_tick_at_the_time_of_the_last_one_is_a_cause_with_its_own_price() -> None:
    eng = engine()
    # ETH last ticked at ts 7 (1500): a new price at the same time is accepted
    (a, _) = of(run(eng, [Tick("ETH-PERP", 1450.0, 7)]), "A1")
    assert a.severity == "critical" and a.ts == 7
    assert a.trigger is not None and (a.trigger.symbol, a.trigger.price) == ("ETH-PERP", 1450.0)


def test_ticks_applied_by_the_driver_and_noted_give_what_apply_gives() -> None:
    """A driver applying ticks to the book itself (replay's compiled runs) notes
    them and evaluates where :meth:`Engine.apply` would: the same alerts."""
    path = [
        Tick("SOL-PERP", 19.0, 20), Tick("ETH-PERP", 1460.0, 21), Tick("BTC-PERP", 20990.0, 22),
        Tick("ETH-PERP", 1440.0, 23), Tick("SOL-PERP", 21.0, 24), Tick("ETH-PERP", 1455.0, 25),
        Tick("ETH-PERP", 1510.0, 26), Tick("BTC-PERP", 21000.0, 26),
    ]  # fmt: skip
    through_apply = run(engine(), *([t] for t in path))
    eng = engine()
    sid = PARAMS.symbol_id
    noted: list[Alert] = []
    with capture_logs():
        for t in path:
            assert eng.book.apply_tick(sid[t.symbol], t.price, t.ts) is None
            eng.note_ticks([sid[t.symbol]])
            noted += eng.evaluate()  # nothing unless accounts are dirty, as in apply
    assert len(through_apply) >= 4
    assert [a.to_json_bytes() for a in noted] == [a.to_json_bytes() for a in through_apply]


eth_paths = st.lists(st.floats(min_value=1400.0, max_value=1520.0), min_size=1, max_size=25)
noise = st.lists(
    st.lists(st.floats(min_value=15.0, max_value=25.0), max_size=3), min_size=25, max_size=25
)


@settings(max_examples=60, deadline=None)
@given(eth_paths, noise)
def test_ids_do_not_depend_on_unrelated_symbols_sharing_the_batch(
    prices: list[float], sol: list[list[float]]
) -> None:
    def batches(shared: bool) -> list[list[Any]]:
        out: list[list[Any]] = []
        for k, price in enumerate(prices):
            ts = 100 + 10 * k
            eth = Tick("ETH-PERP", price, ts)
            others = [Tick("SOL-PERP", p, ts + 1 + j) for j, p in enumerate(sol[k])]
            out += [[eth, *others]] if shared else [[eth], *([o] for o in others)]
        return out

    alone = of(run(engine(), *batches(False)), "A1")
    shared = of(run(engine(), *batches(True)), "A1")
    assert [a.to_json_bytes() for a in shared] == [a.to_json_bytes() for a in alone]


# ---------------------------------------------------------------- flood control


def test_flood_control_counts_per_account_and_kind_not_per_isolated_unit() -> None:
    cfg = AlertsConfig(min_interval_s=60.0, stale_price_s=1e9)
    eng = engine(cfg)
    clock = eng.clock
    assert isinstance(clock, ManualClock)
    run(eng, [PositionEvent("A1", "SOL-PERP", 1.0, 20.0, 9, "isolated", 2.0)])
    first = run(eng, [Tick("ETH-PERP", 1460.0, 20)])  # A1's cross part: margin warning
    assert [(a.kind, a.severity) for a in of(first, "A1")] == [
        ("margin", "warning"),
        ("contagion", "warning"),
    ]
    clock.advance(1_000)
    # an isolated position of the same account reaches warning: the same account and
    # kind within the interval, held back
    assert of(run(eng, [Tick("SOL-PERP", 19.15, 21)]), "A1") == []
    assert eng.alerts is not None
    assert eng.alerts.suppressed == {"margin": 1}  # type: ignore[attr-defined]
    clock.advance(60_000)
    with capture_logs():
        late = of(eng.poll(), "A1")
    assert [(a.kind, a.isolated_symbol, a.ts) for a in late] == [("margin", "SOL-PERP", 21)]
    assert late[0].trigger is not None and late[0].trigger.price == 19.15


def test_a_held_back_episode_is_counted_once_whatever_it_owes_meanwhile() -> None:
    cfg = AlertsConfig(min_interval_s=60.0, stale_price_s=1e9)
    eng = engine(cfg)
    clock = eng.clock
    assert isinstance(clock, ManualClock)
    run(eng, [Tick("ETH-PERP", 1450.0, 20)])  # critical fires: the window's peak
    clock.advance(1_000)
    run(eng, [Tick("ETH-PERP", 1500.0, 21)])  # resolved
    clock.advance(1_000)
    assert of(run(eng, [Tick("ETH-PERP", 1460.0, 22)]), "A1") == []  # warning owed
    assert of(run(eng, [Tick("ETH-PERP", 1450.0, 23)]), "A1") == []  # critical owed
    assert eng.alerts is not None
    assert eng.alerts.suppressed == {"margin": 1, "contagion": 1}  # type: ignore[attr-defined]
    clock.advance(60_000)
    with capture_logs():
        late = of(eng.poll(), "A1")
    assert [(a.kind, a.severity, a.ts) for a in late] == [
        ("margin", "critical", 23),
        ("contagion", "critical", 23),
    ]
    assert eng.alerts.suppressed == {"margin": 1, "contagion": 1}  # type: ignore[attr-defined]
