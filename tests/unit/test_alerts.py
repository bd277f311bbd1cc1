"""Alert engine: levels with hysteresis, contagion attribution, flood control,
stale prices, isolated units, the wire contract, metrics and the file sink."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from monitor.alerts.config import AlertsConfig, MqttConfig
from monitor.alerts.engine import AlertEngine
from monitor.alerts.fsm import (
    TRANSITIONS,
    Hysteresis,
    Move,
    advance,
    detect,
    reconcile,
)
from monitor.alerts.model import (
    Alert,
    alert_id,
    batch_from_json_bytes,
    encode_batch,
    from_json_bytes,
)
from monitor.book import MarginBook
from monitor.cascade.watch import CascadeAlert
from monitor.clock import ManualClock
from monitor.errors import ConfigError
from monitor.events import BalanceEvent, PositionEvent, Tick
from monitor.instruments import RiskParams
from monitor.risk.levels import Status, Thresholds
from monitor.risk.report import account_report
from monitor.sinks import FanOut, FileSink
from monitor.sinks.mqtt import BurstDetector, MqttSink, backoff_s, topic_segment

CONTRACT_KEYS = [
    "id", "kind", "severity", "state", "account", "ts", "emitted_at", "margin_ratio",
    "equity", "maintenance_margin", "trigger", "culprits", "victims",
    "healthy_notional_at_risk",
]  # fmt: skip
HYST = Hysteresis((0.8, 0.9, 1.0), 0.05)
H, W, C, L = Status.HEALTHY, Status.WARNING, Status.CRITICAL, Status.LIQUIDATABLE


class Rig:
    """A book, an engine on a manual clock, and a fresh metrics registry."""

    def __init__(self, params: RiskParams, config: AlertsConfig | None = None) -> None:
        self.config = config or AlertsConfig()
        self.book = MarginBook(params, self.config.thresholds())
        self.clock = ManualClock(1_700_000_000_000)
        self.registry = CollectorRegistry()
        self.engine = AlertEngine(self.config, self.clock, self.registry)

    def apply(self, *events: PositionEvent | BalanceEvent | Tick) -> list[Alert]:
        out: list[Alert] = []
        for ev in events:
            assert self.book.apply(ev) is None
            trigger = ev if isinstance(ev, Tick) else None
            out += self.engine.evaluate(self.book, self.book.drain_dirty(), trigger)
        return out

    def metric(self, name: str, **labels: str) -> float:
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v


def brief(alerts: list[Alert]) -> list[tuple[str, str, str, str]]:
    return [(a.account, a.kind, a.severity, a.state) for a in alerts]


def eth(price: float, ts: int) -> Tick:
    return Tick("ETH-PERP", price, ts)


def contagion_book(rig: Rig) -> None:
    """A1: 1000 USDT; desk-1 long 0.1 BTC-PERP (profitable), desk-2 long 10 ETH-PERP."""
    rig.apply(
        BalanceEvent("A1", "USDT", 1000.0, 1),
        PositionEvent("A1", "BTC-PERP", 0.1, 20000.0, 2, sub_account="desk-1"),
        PositionEvent("A1", "ETH-PERP", 10.0, 1500.0, 3, sub_account="desk-2"),
        Tick("BTC-PERP", 21000.0, 4),
        eth(1500.0, 5),
    )


# ---------------------------------------------------------------- state machine


def test_transition_table_moves_one_level_at_a_time_in_both_directions() -> None:
    ups = [(t.source, t.target) for t in TRANSITIONS if t.move is Move.RISE]
    downs = [(t.source, t.target) for t in TRANSITIONS if t.move is Move.CLEAR]
    assert ups == [(H, W), (W, C), (C, L)]
    assert downs == [(L, C), (C, W), (W, H)]


def test_a_level_clears_only_below_its_threshold_minus_the_band() -> None:
    assert advance(H, 0.95, HYST) == C
    assert advance(C, 0.86, HYST) == C  # inside the band of CRITICAL
    assert advance(C, 0.849, HYST) == W
    assert advance(W, 0.751, HYST) == W
    assert advance(W, 0.7, HYST) == H
    assert advance(L, math.inf, HYST) == L
    assert detect(W, math.nan, HYST) is None


def test_reconcile_fires_the_level_reached_and_resolves_what_is_left_behind() -> None:
    active, changes = reconcile(0, C)  # a jump fires only the level reached
    assert [(c.severity, c.firing) for c in changes] == [(C, True)]
    active, changes = reconcile(active, W)  # critical resolves, warning now fires
    assert [(c.severity, c.firing) for c in changes] == [(C, False), (W, True)]
    active, changes = reconcile(active, L)
    assert [(c.severity, c.firing) for c in changes] == [(L, True)]
    active, changes = reconcile(active, H)
    assert [(c.severity, c.firing) for c in changes] == [(L, False), (W, False)]
    assert active == 0


# ---------------------------------------------------------------- margin + contagion


def test_a_loss_in_one_sub_account_alerts_with_culprits_and_victims(
    small_params: RiskParams,
) -> None:
    rig = Rig(small_params)
    contagion_book(rig)
    warn = rig.apply(eth(1460.0, 10))  # MR = 576 / 700
    assert brief(warn) == [
        ("A1", "margin", "warning", "firing"),
        ("A1", "contagion", "warning", "firing"),
    ]
    crit = rig.apply(eth(1450.0, 11))  # MR = 572 / 600
    assert brief(crit) == [
        ("A1", "margin", "critical", "firing"),
        ("A1", "contagion", "critical", "firing"),
    ]
    alert = crit[1]
    assert alert.ts == 11 and alert.emitted_at == rig.clock.now_ms()
    assert alert.margin_ratio == pytest.approx(572 / 600)
    assert (alert.equity, alert.maintenance_margin) == pytest.approx((600.0, 572.0))
    assert alert.trigger is not None
    assert (alert.trigger.symbol, alert.trigger.price, alert.trigger.ts) == ("ETH-PERP", 1450.0, 11)
    assert [(c.symbol, c.sub_account) for c in alert.culprits] == [("ETH-PERP", "desk-2")]
    assert alert.culprits[0].unrealized_pnl == pytest.approx(-500.0)
    report = account_report(rig.book, 0)["contagion"]
    (victim,) = alert.victims
    (expected,) = report["victims"]
    assert (victim.symbol, victim.sub_account) == ("BTC-PERP", "desk-1")
    assert victim.notional == pytest.approx(2100.0)
    assert victim.unrealized_pnl == pytest.approx(100.0)
    assert victim.liquidation_price == pytest.approx(expected["liquidation_price"])
    assert victim.contagion_shift == pytest.approx(expected["contagion_shift"])
    assert alert.healthy_notional_at_risk == pytest.approx(report["healthy_notional_at_risk"])


def test_re_evaluation_inside_the_band_emits_nothing_and_recovery_resolves_each_firing(
    small_params: RiskParams,
) -> None:
    rig = Rig(small_params)
    contagion_book(rig)
    rig.apply(eth(1460.0, 10), eth(1450.0, 11))
    assert rig.apply(eth(1455.0, 12), eth(1451.0, 13), eth(1455.0, 14)) == []  # 0.883: held
    assert brief(rig.apply(eth(1462.0, 15))) == [  # 0.801: below 0.85, critical clears
        ("A1", "margin", "critical", "resolved"),
        ("A1", "contagion", "critical", "resolved"),
    ]
    assert rig.apply(eth(1465.0, 16)) == []  # 0.771: below 0.8 but inside warning's band
    assert brief(rig.apply(eth(1480.0, 17))) == [  # 0.649
        ("A1", "margin", "warning", "resolved"),
        ("A1", "contagion", "warning", "resolved"),
    ]
    assert rig.metric("monitor_alerts_total", kind="margin", state="firing") == 2
    assert rig.metric("monitor_alerts_total", kind="contagion", state="resolved") == 2


def test_an_account_inside_the_band_is_revisited_although_the_book_no_longer_reports_it(
    small_params: RiskParams,
) -> None:
    rig = Rig(small_params)
    contagion_book(rig)
    rig.apply(eth(1460.0, 10))  # WARNING
    assert rig.apply(eth(1465.0, 11)) == []  # 0.771: the book says HEALTHY, the alert holds
    assert rig.book.drain_dirty().size == 0
    rig.book.apply(eth(1490.0, 12))  # a calm tick: the book reports nothing
    assert rig.book.drain_dirty().size == 0
    assert brief(rig.engine.evaluate(rig.book, [])) == [
        ("A1", "margin", "warning", "resolved"),
        ("A1", "contagion", "warning", "resolved"),
    ]


def test_contagion_needs_the_configured_notional_or_share(small_params: RiskParams) -> None:
    rig = Rig(small_params, AlertsConfig(contagion_min_notional=5000.0))
    contagion_book(rig)
    assert brief(rig.apply(eth(1450.0, 10))) == [("A1", "margin", "critical", "firing")]
    rig = Rig(small_params, AlertsConfig(contagion_min_share=0.2))  # 2100 / 16600 < 20 %
    contagion_book(rig)
    assert brief(rig.apply(eth(1450.0, 10))) == [("A1", "margin", "critical", "firing")]
    rig = Rig(small_params, AlertsConfig(contagion_min_share=0.1, contagion_min_notional=2000))
    contagion_book(rig)
    assert [a.kind for a in rig.apply(eth(1450.0, 10))] == ["margin", "contagion"]
    rig = Rig(small_params, AlertsConfig(contagion_min_share=0.1, contagion_min_notional=5000))
    contagion_book(rig)  # the share alone is enough
    assert [a.kind for a in rig.apply(eth(1450.0, 10))] == ["margin", "contagion"]


def test_an_account_without_healthy_positions_has_no_contagion(small_params: RiskParams) -> None:
    rig = Rig(small_params)
    rig.apply(
        BalanceEvent("A1", "USDT", 1000.0, 1),
        PositionEvent("A1", "ETH-PERP", 10.0, 1500.0, 2),
    )
    assert brief(rig.apply(eth(1455.0, 3))) == [("A1", "margin", "critical", "firing")]


def test_ids_are_stable_hashes_of_account_unit_kind_transition_and_event_time(
    small_params: RiskParams,
) -> None:
    def run() -> list[str]:
        rig = Rig(small_params)
        contagion_book(rig)
        return [a.id for a in rig.apply(eth(1460.0, 10), eth(1450.0, 11), eth(1480.0, 12))]

    first, second = run(), run()
    assert first == second and len(set(first)) == len(first) == 8
    assert first[0] == alert_id("A1", "cross", "margin", "healthy->warning:warning:firing", 10)


def test_one_canonical_log_line_per_alert(small_params: RiskParams) -> None:
    rig = Rig(small_params)
    contagion_book(rig)
    with capture_logs() as logs:
        alerts = rig.apply(eth(1450.0, 10))
    lines = [e for e in logs if e["event"] == "alert"]
    assert [(e["id"], e["kind"], e["account"], e["state"], e["severity"]) for e in lines] == [
        (a.id, a.kind, a.account, a.state, a.severity) for a in alerts
    ]


# ---------------------------------------------------------------- flood control


def test_a_re_firing_within_the_interval_is_deferred_and_counted(small_params: RiskParams) -> None:
    rig = Rig(small_params, AlertsConfig(min_interval_s=60.0, stale_price_s=3600.0))
    contagion_book(rig)
    assert len(rig.apply(eth(1460.0, 10))) == 2  # warning fires
    rig.clock.advance(1_000)
    assert len(rig.apply(eth(1500.0, 11))) == 2  # resolutions always pass
    rig.clock.advance(1_000)
    assert rig.apply(eth(1460.0, 12)) == []  # the same level again: held back
    assert rig.apply(eth(1459.0, 13)) == []  # still owed, counted once
    assert rig.metric("monitor_alerts_suppressed_total", kind="margin") == 1
    assert rig.metric("monitor_alerts_suppressed_total", kind="contagion") == 1
    assert brief(rig.apply(eth(1450.0, 14))) == [  # an escalation always passes
        ("A1", "margin", "critical", "firing"),
        ("A1", "contagion", "critical", "firing"),
    ]


def test_a_deferred_firing_goes_out_when_due_if_the_account_is_still_there(
    small_params: RiskParams,
) -> None:
    rig = Rig(small_params, AlertsConfig(min_interval_s=60.0, stale_price_s=3600.0))
    contagion_book(rig)
    rig.apply(eth(1460.0, 10), eth(1500.0, 11))
    rig.clock.advance(5_000)
    assert rig.apply(eth(1460.0, 12)) == []
    assert rig.engine.poll(rig.book) == []
    rig.clock.advance(55_000)  # the window of the first firing has passed
    late = rig.engine.poll(rig.book)
    assert brief(late) == [
        ("A1", "margin", "warning", "firing"),
        ("A1", "contagion", "warning", "firing"),
    ]
    assert late[0].ts == 12  # the event time the monitor had reached


def test_a_deferred_firing_is_dropped_when_the_account_recovered_meanwhile(
    small_params: RiskParams,
) -> None:
    rig = Rig(small_params, AlertsConfig(min_interval_s=60.0, stale_price_s=3600.0))
    contagion_book(rig)
    rig.apply(eth(1460.0, 10), eth(1500.0, 11))
    rig.clock.advance(5_000)
    assert rig.apply(eth(1460.0, 12)) == []
    assert rig.apply(eth(1500.0, 13)) == []  # never told it fired: nothing to resolve
    rig.clock.advance(120_000)
    assert rig.engine.poll(rig.book) == []
    assert rig.engine.summary(rig.book)["deferred"] == 0


# ---------------------------------------------------------------- stale prices


def test_a_symbol_with_positions_and_no_tick_goes_stale_and_its_next_tick_resolves_it(
    small_params: RiskParams,
) -> None:
    rig = Rig(small_params, AlertsConfig(stale_price_s=30.0))
    contagion_book(rig)
    now = rig.clock.now_ms
    assert rig.engine.check_stale(rig.book, now()) == []
    rig.clock.advance(29_000)
    assert rig.engine.check_stale(rig.book, now()) == []
    rig.clock.advance(1_000)
    fired = rig.engine.check_stale(rig.book, now())
    assert brief(fired) == [
        ("market", "stale_price", "warning", "firing"),
        ("market", "stale_price", "warning", "firing"),
    ]
    assert [a.trigger.symbol for a in fired if a.trigger] == ["BTC-PERP", "ETH-PERP"]
    assert rig.engine.check_stale(rig.book, now()) == []  # once, not per check
    resolved = rig.apply(eth(1500.0, 40))
    assert brief(resolved) == [("market", "stale_price", "warning", "resolved")]
    assert resolved[0].trigger is not None and resolved[0].trigger.ts == 40
    assert resolved[0].ts == 40


def test_symbols_without_open_positions_never_go_stale(small_params: RiskParams) -> None:
    rig = Rig(small_params, AlertsConfig(stale_price_s=1.0))
    rig.apply(Tick("SOL-PERP", 20.0, 1))
    rig.clock.advance(3_600_000)
    assert rig.engine.check_stale(rig.book, rig.clock.now_ms()) == []


# ---------------------------------------------------------------- isolated units


def test_an_isolated_position_is_its_own_unit(small_params: RiskParams) -> None:
    rig = Rig(small_params)
    rig.apply(
        BalanceEvent("A1", "USDT", 10000.0, 1),
        PositionEvent("A1", "BTC-PERP", 0.1, 20000.0, 2),
        PositionEvent("A1", "ETH-PERP", 1.0, 1500.0, 3, "isolated", 100.0, "desk-3"),
    )
    fired = rig.apply(eth(1420.0, 4))  # MM 1420*2% = 28.4, E = 100 - 80 = 20
    assert brief(fired) == [("A1", "margin", "liquidatable", "firing")]
    (alert,) = fired
    assert alert.isolated_symbol == "ETH-PERP"
    assert alert.margin_ratio == pytest.approx(28.4 / 20.0)
    assert [(c.symbol, c.sub_account) for c in alert.culprits] == [("ETH-PERP", "desk-3")]
    assert alert.victims == ()
    assert b'"isolated_symbol":"ETH-PERP"' in alert.to_json_bytes()
    closed = rig.apply(PositionEvent("A1", "ETH-PERP", 0.0, 1500.0, 5, margin_mode="isolated"))
    assert brief(closed) == [("A1", "margin", "liquidatable", "resolved")]
    assert closed[0].isolated_symbol == "ETH-PERP"


# ---------------------------------------------------------------- wire contract


def test_the_json_has_exactly_the_contract_fields_in_order(small_params: RiskParams) -> None:
    rig = Rig(small_params)
    contagion_book(rig)
    alert = rig.apply(eth(1450.0, 11))[1]
    data = json.loads(alert.to_json_bytes())
    # the contract's fields in its order, then the culprits by sub-account
    assert list(data) == [*CONTRACT_KEYS, "culprit_sub_accounts"]
    assert data["culprit_sub_accounts"] == [{"sub_account": "desk-2", "unrealized_pnl": -500.0}]
    assert list(data["trigger"]) == ["symbol", "price", "ts"]
    assert list(data["culprits"][0]) == ["symbol", "sub_account", "unrealized_pnl"]
    assert list(data["victims"][0]) == [
        "symbol", "sub_account", "notional", "unrealized_pnl", "liquidation_price",
        "contagion_shift",
    ]  # fmt: skip
    assert (data["kind"], data["severity"], data["state"]) == ("contagion", "critical", "firing")


def test_culprits_are_listed_per_position_and_summed_per_sub_account(
    small_params: RiskParams,
) -> None:
    rig = Rig(small_params)
    rig.apply(
        BalanceEvent("A1", "USDT", 1000.0, 1),
        PositionEvent("A1", "BTC-PERP", 0.1, 21000.0, 2, sub_account="desk-1"),
        PositionEvent("A1", "ETH-PERP", 5.0, 1500.0, 3, sub_account="desk-2"),
        PositionEvent("A1", "SOL-PERP", 100.0, 21.0, 4, sub_account="desk-2"),
        Tick("BTC-PERP", 20900.0, 5),  # desk-1: -10
        Tick("SOL-PERP", 20.0, 6),  # desk-2: -100
        eth(1500.0, 7),
    )
    (alert,) = rig.apply(eth(1400.0, 8))  # desk-2: -500 more; MR 371.8 / 390
    assert alert.severity == "critical"
    assert [(c.symbol, c.sub_account) for c in alert.culprits] == [
        ("ETH-PERP", "desk-2"),
        ("SOL-PERP", "desk-2"),
        ("BTC-PERP", "desk-1"),
    ]
    assert [(g.sub_account, g.unrealized_pnl) for g in alert.culprit_sub_accounts] == [
        ("desk-2", pytest.approx(-600.0)),
        ("desk-1", pytest.approx(-10.0)),
    ]
    data = json.loads(alert.to_json_bytes())
    assert [g["sub_account"] for g in data["culprit_sub_accounts"]] == ["desk-2", "desk-1"]


def test_an_alert_without_culprits_has_no_sub_account_aggregate(small_params: RiskParams) -> None:
    rig = Rig(small_params)
    alerts = rig.apply(  # MR 30 / 36, no loss
        BalanceEvent("A1", "USDT", 36.0, 1), PositionEvent("A1", "BTC-PERP", 0.1, 20000.0, 2)
    )
    alert = alerts[0]
    assert (alert.kind, alert.severity, alert.culprits) == ("margin", "warning", ())
    assert list(json.loads(alert.to_json_bytes())) == CONTRACT_KEYS


def test_non_finite_numbers_are_written_as_null(small_params: RiskParams) -> None:
    rig = Rig(small_params)
    rig.apply(
        BalanceEvent("A1", "USDT", 100.0, 1),
        PositionEvent("A1", "ETH-PERP", 10.0, 1500.0, 2),
    )
    (alert,) = rig.apply(eth(1400.0, 3))  # equity -900: infinite ratio
    assert alert.margin_ratio == math.inf
    data = orjson.loads(alert.to_json_bytes())
    assert data["margin_ratio"] is None and data["equity"] == pytest.approx(-900.0)


def test_a_batch_is_a_json_array_of_alerts(small_params: RiskParams) -> None:
    rig = Rig(small_params)
    contagion_book(rig)
    alerts = rig.apply(eth(1450.0, 11))
    assert batch_from_json_bytes(encode_batch(alerts)) == alerts


# ---------------------------------------------------------------- config, book, summary


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"warning_ratio": 0.95}, "ascend"),
        ({"hysteresis": -0.1}, "alerts.hysteresis"),
        ({"hysteresis": 0.9}, "alerts.hysteresis"),
        ({"contagion_min_share": 1.5}, "alerts.contagion_min_share"),
        ({"stale_price_s": 0.0}, "alerts.stale_price_s"),
        ({"min_interval_s": math.nan}, "alerts.min_interval_s"),
    ],
)
def test_invalid_alert_settings_are_rejected_by_name(kw: dict[str, float], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        AlertsConfig(**kw)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"port": 0}, "mqtt.port"),
        ({"topic_prefix": "a/#"}, "mqtt.topic_prefix"),
        ({"topic_prefix": "/a"}, "mqtt.topic_prefix"),
        ({"password": "x"}, "mqtt.password"),
        ({"tls_ca_file": "/ca.pem"}, "mqtt.tls_ca_file"),
        ({"tls_cert_file": "/c.pem"}, "mqtt.tls_cert_file"),
        ({"tls": True, "tls_key_file": "/k.pem"}, "mqtt.tls_key_file"),
        ({"queue_max_mb": 0.0}, "mqtt.queue_max_mb"),
        ({"batch_max_alerts": 0}, "mqtt.batch_max_alerts"),
        ({"publish_rate_limit_per_s": 0.0}, "mqtt.publish_rate_limit_per_s"),
    ],
)
def test_invalid_mqtt_settings_are_rejected_by_name(kw: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        MqttConfig(**kw)  # type: ignore[arg-type]


def test_the_config_fields_carry_their_units_and_defaults() -> None:
    assert {f.name: f.default for f in dataclasses.fields(AlertsConfig)} == {
        "warning_ratio": 0.8, "critical_ratio": 0.9, "liquidatable_ratio": 1.0,
        "hysteresis": 0.05, "min_interval_s": 60.0, "contagion_min_notional": 0.0,
        "contagion_min_share": 0.0, "contagion_hysteresis": 0.2, "contagion_upnl_band": 0.002,
        "stale_price_s": 30.0,
    }  # fmt: skip
    assert [f.name for f in dataclasses.fields(MqttConfig)] == [
        "enabled", "host", "port", "topic_prefix", "username", "password", "tls",
        "tls_ca_file", "tls_cert_file", "tls_key_file", "client_id", "instance_topics",
        "publish_rate_limit_per_s", "batch_max_alerts", "queue_max", "queue_max_mb",
        "summary_interval_s", "reconnect_max_s",
    ]  # fmt: skip
    assert (MqttConfig().queue_max, MqttConfig().queue_max_mb) == (500_000, 256.0)


def test_a_book_built_with_other_thresholds_is_refused(small_params: RiskParams) -> None:
    book = MarginBook(small_params, Thresholds(0.5, 0.9, 1.0))
    engine = AlertEngine(AlertsConfig(), ManualClock(0), CollectorRegistry())
    with pytest.raises(ConfigError, match="thresholds"):
        engine.evaluate(book, [])


def test_the_summary_counts_accounts_by_status_and_what_is_firing(
    small_params: RiskParams,
) -> None:
    rig = Rig(small_params)
    contagion_book(rig)
    rig.apply(BalanceEvent("A2", "USDT", 50.0, 6))
    rig.apply(eth(1450.0, 11))
    summary = rig.engine.summary(rig.book)
    assert summary["accounts"] == 2
    assert summary["by_status"] == {"healthy": 1, "warning": 0, "critical": 1, "liquidatable": 0}
    assert summary["firing"] == {"margin": 1, "contagion": 1, "stale_price": 0}
    assert summary["event_ts"] == 11


def test_every_kind_has_a_suppressed_series_from_the_start() -> None:
    registry = CollectorRegistry()
    AlertEngine(AlertsConfig(), ManualClock(0), registry)
    for kind in ("margin", "contagion", "stale_price", "cascade"):
        assert registry.get_sample_value("monitor_alerts_suppressed_total", {"kind": kind}) == 0


def test_metrics_never_carry_an_account_label(small_params: RiskParams) -> None:
    rig = Rig(small_params)
    contagion_book(rig)
    rig.apply(eth(1450.0, 11))
    for family in rig.registry.collect():
        for sample in family.samples:
            assert "account" not in sample.labels
            assert "A1" not in sample.labels.values()


def test_a_bulk_loaded_book_is_evaluated_whole(small_params: RiskParams) -> None:
    rig = Rig(small_params)
    contagion_book(rig)
    rig.book.apply(eth(1450.0, 11))
    rig.book.drain_dirty()  # e.g. a snapshot restore: nothing reported as dirty
    assert [a.kind for a in rig.engine.evaluate_all(rig.book)] == ["margin", "contagion"]


# ---------------------------------------------------------------- sinks (no broker)


async def test_the_file_sink_writes_byte_stable_json_lines(
    small_params: RiskParams, tmp_path: Path
) -> None:
    def alerts() -> list[Alert]:
        rig = Rig(small_params)
        contagion_book(rig)
        return rig.apply(eth(1460.0, 10), eth(1450.0, 11), eth(1480.0, 12))

    paths = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for path in paths:
        sink = FileSink(path, fsync=True)
        fan = FanOut([sink])
        await fan.start()
        await fan.publish(alerts())
        await fan.flush(5.0)
        await fan.close()
    first, second = (p.read_bytes() for p in paths)
    assert first == second
    lines = first.splitlines()
    assert len(lines) == 8 and all(json.loads(x)["account"] == "A1" for x in lines)


def test_account_ids_are_one_topic_level() -> None:
    assert topic_segment("A1") == "A1"
    assert topic_segment("desk/1+#%") == "desk%2F1%2B%23%25"


def test_reconnect_backoff_is_jittered_and_capped() -> None:
    import random

    rng = random.Random(7)
    delays = [backoff_s(attempt, 60.0, rng) for attempt in range(1, 40)]
    assert all(0.0 <= d <= min(60.0, 1.5 ** min(10, k + 1)) for k, d in enumerate(delays))
    assert max(backoff_s(50, 2.0, rng) for _ in range(100)) <= 2.0


def test_the_mqtt_sink_switches_to_batches_above_the_rate_and_back_after_the_burst() -> None:
    burst = BurstDetector(limit_per_s=1000.0)
    burst.arrived(10, 0.0)
    assert burst.decide(0.1, backlog=10) is False
    burst.arrived(5000, 0.2)
    assert burst.decide(0.2, backlog=10) is True
    assert burst.decide(1.5, backlog=0) is True  # the last second still saw the burst
    burst.arrived(10, 3.0)
    assert burst.decide(3.1, backlog=0) is False
    assert burst.decide(3.2, backlog=5000) is True  # a backlog after a reconnect


def cascade_alert(state: str = "firing", ts: int = 5) -> CascadeAlert:
    return CascadeAlert(
        shock="BTC=-10%", state=state, amplification=1.9,  # type: ignore[arg-type]
        liquidated_notional=2800.0, accounts_liquidated=2, bad_debt=0.0,
        amplification_threshold=1.5, notional_threshold=1e6, ts=ts,
        healthy_notional_destroyed=900.0,
    )  # fmt: skip


async def test_cascade_alerts_speak_the_alert_wire_contract_through_engine_and_sinks(
    tmp_path: Path,
) -> None:
    registry = CollectorRegistry()
    engine = AlertEngine(AlertsConfig(), ManualClock(1_000), registry)
    with capture_logs() as logs:
        (alert,) = engine.admit([cascade_alert()])
    assert logs[0]["id"] == alert.id and logs[0]["account"] == "market"
    sample = {"kind": "cascade", "state": "firing"}
    assert registry.get_sample_value("monitor_alerts_total", sample) == 1
    data = orjson.loads(alert.to_json_bytes())
    assert list(data) == [*CONTRACT_KEYS, "cascade"]
    assert (data["kind"], data["severity"], data["state"], data["account"]) == (
        "cascade", "critical", "firing", "market",
    )  # fmt: skip
    assert (data["ts"], data["emitted_at"], data["healthy_notional_at_risk"]) == (5, 1_000, 900.0)
    assert data["cascade"]["shock"] == "BTC=-10%" and data["cascade"]["amplification"] == 1.9
    parsed = from_json_bytes(alert.to_json_bytes())  # consumers parse it as any alert
    assert (parsed.id, parsed.kind, parsed.state, parsed.account) == (
        alert.id, "cascade", "firing", "market",
    )  # fmt: skip
    # stable: the same scenario, transition and event time give the same id
    assert cascade_alert().id == alert.id
    assert len({alert.id, cascade_alert(ts=6).id, cascade_alert("resolved").id}) == 3
    sink = FileSink(tmp_path / "market.jsonl")
    await sink.start()
    await sink.publish([alert])
    await sink.close()
    assert (tmp_path / "market.jsonl").read_bytes() == alert.to_json_bytes() + b"\n"
    mqtt = MqttSink(MqttConfig(topic_prefix="risk"), registry=CollectorRegistry())
    assert mqtt.topic_for(alert) == "risk/alerts/cascade/market"


def test_a_replaced_book_keeps_each_accounts_alert_state_by_account_id(
    small_params: RiskParams,
) -> None:
    rig = Rig(small_params)
    rig.apply(BalanceEvent("A0", "USDT", 100.0, 1))  # A1 gets slot 1 here
    contagion_book(rig)
    assert len(rig.apply(eth(1450.0, 11))) == 2  # A1 critical: margin and contagion
    # The daemon swaps in another book (restore, revocation): A1 now at slot 0.
    other = MarginBook(small_params, rig.config.thresholds())
    for ev in (
        BalanceEvent("A1", "USDT", 1000.0, 1),
        PositionEvent("A1", "BTC-PERP", 0.1, 20000.0, 2, sub_account="desk-1"),
        PositionEvent("A1", "ETH-PERP", 10.0, 1500.0, 3, sub_account="desk-2"),
        Tick("BTC-PERP", 21000.0, 4),
        eth(1450.0, 11),
        BalanceEvent("A9", "USDT", 5.0, 12),
    ):
        other.apply(ev)
    other.drain_dirty()
    assert other.slot_of("A1") == 0
    rig.book = other
    assert rig.engine.evaluate_all(other) == []  # nothing new: still critical
    assert brief(rig.apply(eth(1500.0, 13))) == [
        ("A1", "margin", "critical", "resolved"),
        ("A1", "contagion", "critical", "resolved"),
    ]
