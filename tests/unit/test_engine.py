"""The engine both drivers share: apply, rejections, alerts, sinks, latencies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from monitor.alerts.config import AlertsConfig
from monitor.alerts.engine import AlertEngine
from monitor.book import MarginBook
from monitor.clock import ManualClock
from monitor.engine import DeliveryError, Engine
from monitor.events import BalanceEvent, PositionEvent, RejectReason, Tick
from monitor.instruments import RiskParams
from monitor.metrics import Metrics


class RecordingSink:
    name = "recording"

    def __init__(self, durable: bool = True, fail: bool = False) -> None:
        self.durable = durable
        self.fail = fail
        self.published: list[Any] = []
        self.flushed = 0

    async def start(self) -> None: ...

    async def publish(self, alerts: Sequence[Any]) -> None:
        self.published.extend(alerts)

    async def flush(self, timeout_s: float) -> None:
        if self.fail:
            raise TimeoutError("broker gone")
        self.flushed += 1

    async def close(self) -> None: ...


def _engine(params: RiskParams, **kw: Any) -> tuple[Engine, ManualClock, CollectorRegistry]:
    clock = ManualClock(10_000)
    reg = CollectorRegistry()
    cfg = AlertsConfig()
    eng = Engine(
        params,
        clock,
        thresholds=cfg.thresholds(),
        alerts=AlertEngine(cfg, clock, reg),
        metrics=Metrics(reg),
        **kw,
    )
    return eng, clock, reg


def _risky() -> list[Any]:
    return [
        BalanceEvent("A", "USDT", 100.0, 1),
        PositionEvent("A", "BTC-PERP", 10.0, 100.0, 2),
        Tick("BTC-PERP", 100.0, 3),
    ]


async def test_stale_events_come_back_indexed_and_the_rest_is_applied(
    small_params: RiskParams,
) -> None:
    eng, _, _ = _engine(small_params)
    out = eng.apply(
        [BalanceEvent("A", "USDT", 5.0, 10), BalanceEvent("A", "USDT", 6.0, 9)],
        [Tick("BTC-PERP", 100.0, 5)],
    )
    assert [(i, r.reason) for i, r in out.rejections] == [(1, RejectReason.STALE)]
    out = eng.apply([], [Tick("BTC-PERP", 90.0, 4)])
    assert [(i, r.reason) for i, r in out.rejections] == [(0, RejectReason.STALE)]
    a = eng.book.slot_of("A")
    assert a is not None and eng.book.bal[0, a] == 5.0
    assert eng.book.sym_price[0] == 100.0


async def test_alerts_are_evaluated_after_each_batch_and_published_to_every_sink(
    small_params: RiskParams,
) -> None:
    sinks = [RecordingSink(), RecordingSink(durable=False)]
    eng, _, _ = _engine(small_params, sinks=sinks)
    out = await eng.process(_risky()[:2], [Tick("BTC-PERP", 91.0, 3)])
    assert out.alerts, "a 10x position on 100 of collateral that lost 90 is at risk"
    assert all(a.account == "A" for a in out.alerts)
    assert sinks[0].published == out.alerts == sinks[1].published


async def test_while_catching_up_alerts_wait_and_going_live_evaluates_once(
    small_params: RiskParams,
) -> None:
    eng, _, _ = _engine(small_params, live=False)
    out = eng.apply(_risky()[:2], [Tick("BTC-PERP", 91.0, 3)])
    assert out.alerts == []
    alerts = eng.go_live()
    assert {a.account for a in alerts} == {"A"}
    assert eng.apply([], [Tick("BTC-PERP", 91.0, 4)]).alerts == []  # no transition: silent


async def test_go_live_after_a_restore_evaluates_accounts_that_are_not_healthy(
    small_params: RiskParams,
) -> None:
    from monitor.checkpoint import capture, restore

    src = MarginBook(small_params)
    for ev in [*_risky()[:2], Tick("BTC-PERP", 91.0, 3)]:
        src.apply(ev)
    eng, _, _ = _engine(small_params, live=False)
    eng.replace_book(restore(capture(src), small_params))
    assert eng.book.drain_dirty().size == 0
    assert {a.account for a in eng.go_live()} == {"A"}


async def test_tick_latencies_use_the_injected_clock(small_params: RiskParams) -> None:
    eng, clock, reg = _engine(small_params)
    clock.set(20_000)
    eng.apply([], [Tick("BTC-PERP", 100.0, 19_950)], received_ms=19_990)
    assert reg.get_sample_value("monitor_tick_to_evaluation_seconds_sum") == pytest.approx(0.05)
    assert reg.get_sample_value("monitor_tick_age_seconds_sum") == pytest.approx(0.04)
    assert reg.get_sample_value("monitor_batch_size_count") == 1.0


async def test_flush_waits_for_durable_sinks_only_and_reports_a_failure(
    small_params: RiskParams,
) -> None:
    ok, best_effort = RecordingSink(), RecordingSink(durable=False, fail=True)
    eng, _, _ = _engine(small_params, sinks=[ok, best_effort])
    await eng.flush(1.0)
    assert ok.flushed == 1
    eng.sinks.append(RecordingSink(fail=True))
    with pytest.raises(DeliveryError, match="broker gone"):
        await eng.flush(1.0)


async def test_the_engine_runs_without_alerts(small_params: RiskParams) -> None:
    eng = Engine(small_params, ManualClock())
    out = await eng.process(_risky())
    assert out.alerts == [] and out.rejections == []
    assert eng.go_live() == []
    assert np.isfinite(eng.book.margin_ratio).all()
