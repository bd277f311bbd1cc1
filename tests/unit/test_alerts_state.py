"""The alert engine's state survives a restart: exported keyed by account id,
imported into a new engine over a restored book, and the next evaluation emits
exactly what the uninterrupted engine would have (same ids, same bytes)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from monitor.alerts.config import AlertsConfig
from monitor.alerts.engine import AlertEngine
from monitor.alerts.model import Alert
from monitor.book import MarginBook
from monitor.clock import ManualClock
from monitor.engine import Engine
from monitor.errors import StateError
from monitor.events import BalanceEvent, PositionEvent, Tick
from monitor.instruments import parse_instruments
from tests.conftest import SMALL

PARAMS = parse_instruments(SMALL, source="tests")
T0 = 1_700_000_000_000

BOOK: list[Any] = [
    # A0 never alerts (it gives the others slots that differ between the books)
    BalanceEvent("A0", "USDT", 1e6, 1),
    # A1: contagion (desk-2's ETH loss, desk-1's profitable BTC) and an isolated SOL
    BalanceEvent("A1", "USDT", 1000.0, 2),
    PositionEvent("A1", "BTC-PERP", 0.1, 20000.0, 3, sub_account="desk-1"),
    PositionEvent("A1", "ETH-PERP", 10.0, 1500.0, 4, sub_account="desk-2"),
    PositionEvent("A1", "SOL-PERP", 1.0, 20.0, 5, "isolated", 2.0, "desk-3"),
    # A4: at WARNING on BTC alone, and stays there
    BalanceEvent("A4", "USDT", 1050.0, 6),
    PositionEvent("A4", "BTC-PERP", 1.0, 21000.0, 7),
    # A5: long ETH only, ends up inside warning's hysteresis band
    BalanceEvent("A5", "USDT", 1150.0, 8),
    PositionEvent("A5", "ETH-PERP", 10.0, 1500.0, 9),
    Tick("BTC-PERP", 21000.0, 10),
    Tick("ETH-PERP", 1500.0, 11),
    Tick("SOL-PERP", 20.0, 12),
]
# before the crash: A1 critical (cross) and critical (isolated SOL), A4 warning,
# A5 warning then inside the band (0.774: the book says healthy, the alert holds)
BEFORE: list[list[Any]] = [
    [Tick("ETH-PERP", 1450.0, 20), Tick("SOL-PERP", 19.0, 21)],
    [Tick("ETH-PERP", 1455.0, 22)],
]
# after: A1 and its SOL unit recover, A5 leaves the band, A4 does not move
AFTER: list[Any] = [
    Tick("ETH-PERP", 1500.0, 30),
    Tick("SOL-PERP", 20.0, 31),
    Tick("BTC-PERP", 21005.0, 32),
]


def config(**kw: Any) -> AlertsConfig:
    return AlertsConfig(**{"min_interval_s": 0.0, "stale_price_s": 1e9, **kw})


def live_engine(cfg: AlertsConfig, clock: ManualClock, events: list[Any]) -> Engine:
    alerts = AlertEngine(cfg, clock, CollectorRegistry())
    eng = Engine(PARAMS, clock, thresholds=cfg.thresholds(), alerts=alerts)
    apply(eng, events)
    return eng


def restored_engine(cfg: AlertsConfig, clock: ManualClock, history: list[Any]) -> Engine:
    """A new process: the book restored (as from a snapshot, built in another order
    so slots differ), a fresh alert engine, not live yet."""
    book = MarginBook(PARAMS, cfg.thresholds())
    for ev in sorted(history, key=lambda e: getattr(e, "account", "~"), reverse=True):
        if not isinstance(ev, Tick):
            assert book.apply(ev) is None
    for ev in history:
        if isinstance(ev, Tick):
            book.apply(ev)
    book.drain_dirty()
    alerts = AlertEngine(cfg, clock, CollectorRegistry())
    return Engine(PARAMS, clock, thresholds=cfg.thresholds(), alerts=alerts, book=book, live=False)


def apply(eng: Engine, events: list[Any]) -> list[Alert]:
    with capture_logs():
        ticks = [e for e in events if isinstance(e, Tick)]
        return eng.apply([e for e in events if not isinstance(e, Tick)], ticks).alerts


def flat(batches: list[list[Any]]) -> list[Any]:
    return [e for b in batches for e in b]


def export(eng: Engine) -> dict[str, Any]:
    assert isinstance(eng.alerts, AlertEngine)
    state = eng.alerts.export_state(eng.book)
    return orjson.loads(orjson.dumps(state))  # it must survive JSON


def per_account(alerts: list[Alert]) -> dict[str, list[bytes]]:
    """The wire bytes by account, in emission order (the order across accounts
    follows the book's slots, which a restored book numbers differently)."""
    out: dict[str, list[bytes]] = {}
    for a in alerts:
        out.setdefault(a.account, []).append(a.to_json_bytes())
    return out


def brief(alerts: list[Alert]) -> list[tuple[str, str, str, str, str]]:
    return [(a.account, a.kind, a.severity, a.state, a.isolated_symbol or "") for a in alerts]


def test_after_a_restart_exactly_the_recoveries_resolve_with_the_same_ids() -> None:
    cfg = config()
    # the uninterrupted run
    clock = ManualClock(T0)
    alerts = AlertEngine(cfg, clock, CollectorRegistry())
    steady = Engine(PARAMS, clock, thresholds=cfg.thresholds(), alerts=alerts)
    fired = apply(steady, BOOK) + [a for b in BEFORE for a in apply(steady, b)]
    assert sorted(brief(fired)) == sorted([
        ("A1", "margin", "critical", "firing", ""),
        ("A1", "contagion", "critical", "firing", ""),
        ("A1", "margin", "critical", "firing", "SOL-PERP"),
        ("A4", "margin", "warning", "firing", ""),
        ("A4", "contagion", "warning", "firing", ""),
        ("A5", "margin", "warning", "firing", ""),
    ])  # fmt: skip
    state = export(steady)
    clock.advance(5_000)
    expected = apply(steady, AFTER)
    assert sorted(brief(expected)) == sorted([
        ("A1", "margin", "critical", "resolved", ""),
        ("A1", "contagion", "critical", "resolved", ""),
        ("A1", "margin", "critical", "resolved", "SOL-PERP"),
        ("A5", "margin", "warning", "resolved", ""),
    ])  # fmt: skip

    # the crash: a new engine over the restored book, the state imported, then the
    # catch-up applies the same input while not live, and going live evaluates
    restarted = ManualClock(T0 + 5_000)
    eng = restored_engine(cfg, restarted, BOOK + flat(BEFORE))
    assert eng.book.slot_of("A1") != steady.book.slot_of("A1")
    assert isinstance(eng.alerts, AlertEngine)
    eng.alerts.import_state(eng.book, state)
    assert apply(eng, AFTER) == []  # catching up: nothing yet
    with capture_logs():
        got = eng.go_live()
    assert per_account(got) == per_account(expected)


def test_without_the_state_a_restart_re_fires_and_never_resolves() -> None:
    """What the test above guards against."""
    cfg = config()
    eng = restored_engine(cfg, ManualClock(T0), BOOK + flat(BEFORE))
    apply(eng, AFTER)
    with capture_logs():
        got = eng.go_live()
    assert brief(got) == [
        ("A4", "margin", "warning", "firing", ""),
        ("A4", "contagion", "warning", "firing", ""),
    ]


def test_an_unchanged_account_stays_quiet_and_a_still_critical_one_is_not_re_fired() -> None:
    cfg = config()
    clock = ManualClock(T0)
    steady = live_engine(cfg, clock, BOOK + flat(BEFORE))
    state = export(steady)
    eng = restored_engine(cfg, clock, BOOK + flat(BEFORE))
    assert isinstance(eng.alerts, AlertEngine)
    eng.alerts.import_state(eng.book, state)
    with capture_logs():
        assert eng.go_live() == []
    assert eng.alerts.summary(eng.book)["firing"] == steady.alerts.summary(steady.book)["firing"]  # type: ignore[union-attr]


def test_flood_control_windows_and_deferred_firings_survive_the_restart() -> None:
    cfg = config(min_interval_s=60.0)
    path = [
        [Tick("ETH-PERP", 1460.0, 20)],  # A1 warning fires: the window opens
        [Tick("ETH-PERP", 1500.0, 21)],  # resolved
        [Tick("ETH-PERP", 1461.0, 22)],  # again within the window: held back
    ]

    def run(restart_after: int | None) -> list[bytes]:
        clock = ManualClock(T0)
        eng = live_engine(cfg, clock, BOOK)
        out: list[Alert] = []
        for k, batch in enumerate(path):
            clock.advance(1_000)
            out += apply(eng, batch)
            if k == restart_after:
                state = export(eng)
                eng = restored_engine(cfg, clock, BOOK + flat(path[: k + 1]))
                assert isinstance(eng.alerts, AlertEngine)
                eng.alerts.import_state(eng.book, state)
                with capture_logs():
                    out += eng.go_live()
        clock.advance(60_000)
        with capture_logs():
            out += eng.poll()
        return [a.to_json_bytes() for a in out if a.account == "A1"]

    steady = run(None)
    assert len(steady) == 6  # fired, resolved, the held-back firing late (margin, contagion)
    assert run(0) == steady  # the window survives
    assert run(2) == steady  # the deferred firing survives


def test_a_stale_price_firing_is_resolved_by_the_next_tick_after_a_restart() -> None:
    cfg = AlertsConfig(min_interval_s=0.0, stale_price_s=30.0)
    clock = ManualClock(T0)
    steady = live_engine(cfg, clock, BOOK)
    assert isinstance(steady.alerts, AlertEngine)
    with capture_logs():
        steady.alerts.check_stale(steady.book, clock.now_ms())
        clock.advance(30_000)
        fired = steady.alerts.check_stale(steady.book, clock.now_ms())
    assert {a.trigger.symbol for a in fired if a.trigger} == {"BTC-PERP", "ETH-PERP", "SOL-PERP"}
    state = export(steady)
    eng = restored_engine(cfg, clock, BOOK)
    assert isinstance(eng.alerts, AlertEngine)
    eng.alerts.import_state(eng.book, state)
    with capture_logs():
        assert eng.go_live() == []
    tick = [Tick("ETH-PERP", 1501.0, 40)]
    with capture_logs():
        expected = apply(steady, tick) + steady.poll()
    assert [(a.kind, a.state) for a in expected] == [("stale_price", "resolved")]
    assert apply(eng, tick) == []  # not live: held
    with capture_logs():
        got = eng.go_live()
    assert [a.to_json_bytes() for a in got] == [a.to_json_bytes() for a in expected]


def test_import_merges_and_forget_drops_by_account_id() -> None:
    cfg = config()
    clock = ManualClock(T0)
    steady = live_engine(cfg, clock, BOOK + flat(BEFORE))
    assert isinstance(steady.alerts, AlertEngine)
    a1 = steady.book.slot_of("A1")
    assert a1 is not None
    only_a1 = orjson.loads(orjson.dumps(steady.alerts.export_state(steady.book, [a1])))
    assert list(only_a1["accounts"]) == ["A1"]
    assert only_a1["accounts"]["A1"]["isolated"] == {"SOL-PERP": [2, 2]}  # critical

    eng = restored_engine(cfg, clock, BOOK + flat(BEFORE))
    assert isinstance(eng.alerts, AlertEngine)
    eng.alerts.import_state(eng.book, export(steady))
    eng.alerts.forget(["A1"])
    assert "A1" not in eng.alerts.export_state(eng.book)["accounts"]
    eng.alerts.import_state(eng.book, only_a1)  # A4 and A5 keep theirs
    assert eng.alerts.export_state(eng.book)["accounts"] == export(steady)["accounts"]
    eng.alerts.forget(["A4", "nobody"])
    with capture_logs():
        again = eng.go_live()  # A4 forgotten: its new owner would fire it
    assert brief(again) == [
        ("A4", "margin", "warning", "firing", ""),
        ("A4", "contagion", "warning", "firing", ""),
    ]


def test_accounts_the_book_does_not_hold_are_ignored() -> None:
    cfg = config()
    steady = live_engine(cfg, ManualClock(T0), BOOK + flat(BEFORE))
    state = export(steady)
    book = MarginBook(PARAMS, cfg.thresholds())
    book.apply(BalanceEvent("A9", "USDT", 1.0, 1))
    engine = AlertEngine(cfg, ManualClock(T0), CollectorRegistry())
    engine.import_state(book, state)
    assert engine.export_state(book)["accounts"] == {}


@pytest.mark.parametrize(
    ("state", "needle"),
    [
        ({"version": 7, "accounts": {}}, "version 7"),
        ([], "expected a JSON object"),
        ({"version": 1, "accounts": {"A1": {"level": 9}}}, "account 'A1': .*level"),
        ({"version": 1, "accounts": {"A1": {"margin": "x"}}}, "account 'A1'"),
        ({"version": 1, "accounts": {"A1": {"flood": {"margin": {"deferred": {}}}}}}, "'A1'"),
        ({"version": 1, "market": {"stale": {"ETH-PERP": {}}}}, "market"),
    ],
)
def test_malformed_state_is_refused_naming_the_entry(state: Any, needle: str) -> None:
    cfg = config()
    steady = live_engine(cfg, ManualClock(T0), BOOK)
    assert isinstance(steady.alerts, AlertEngine)
    with pytest.raises(StateError, match=needle):
        steady.alerts.import_state(steady.book, state)
