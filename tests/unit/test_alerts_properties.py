"""Invariants of the alert engine under arbitrary margin-ratio paths.

Each account holds one long BTC-PERP position marked at its entry (maintenance
margin 30, uPnL 0); its USDT balance sets the equity, so a balance of
``30 / r`` puts the account exactly at margin ratio ``r`` (and a negative
balance at an infinite ratio).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from monitor.alerts.config import AlertsConfig
from monitor.alerts.engine import AlertEngine
from monitor.alerts.fsm import Hysteresis, advance, advance_many
from monitor.alerts.model import Alert
from monitor.book import MarginBook
from monitor.clock import ManualClock
from monitor.events import BalanceEvent, PositionEvent
from monitor.instruments import parse_instruments
from monitor.risk.levels import Status
from tests.conftest import SMALL

PARAMS = parse_instruments(SMALL, source="tests")
MM = 30.0  # 0.1 BTC-PERP at 20000: 2000 * 2% - 10
ENTER = (0.8, 0.9, 1.0)
# Ratios that exercise every threshold and band edge, plus anything in between.
ratios = st.one_of(
    st.sampled_from([0.1, 0.749, 0.76, 0.8, 0.85, 0.851, 0.9, 0.95, 0.951, 1.0, 2.0, math.inf]),
    st.floats(min_value=0.05, max_value=1.5),
)


class Run:
    def __init__(self, accounts: int, config: AlertsConfig) -> None:
        self.config = config
        self.book = MarginBook(PARAMS, config.thresholds())
        self.clock = ManualClock(1_700_000_000_000)
        self.engine = AlertEngine(config, self.clock, CollectorRegistry())
        self.ts = 0
        self.alerts: list[Alert] = []
        for k in range(accounts):
            self.book.apply(PositionEvent(f"A{k}", "BTC-PERP", 0.1, 20000.0, 0))
            self.set_ratio(k, 0.1)

    def set_ratio(self, k: int, r: float) -> None:
        self.ts += 1
        amount = -1.0 if math.isinf(r) else MM / r
        assert self.book.apply(BalanceEvent(f"A{k}", "USDT", amount, self.ts)) is None
        self.alerts += self.engine.evaluate(self.book, self.book.drain_dirty())

    def wait(self, ms: int) -> None:
        self.clock.advance(ms)
        self.alerts += self.engine.poll(self.book)


def unit_streams(alerts: list[Alert]) -> dict[tuple[str, str, str], list[str]]:
    out: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for a in alerts:
        out[(a.account, a.kind, a.severity)].append(a.state)
    return out


@given(
    prev=st.lists(st.integers(0, 3), min_size=1, max_size=30),
    data=st.data(),
    band=st.sampled_from([0.0, 0.02, 0.05, 0.1]),
)
def test_the_vector_state_machine_walks_the_transition_table(
    prev: list[int], data: st.DataObject, band: float
) -> None:
    hyst = Hysteresis(ENTER, band)
    rs = data.draw(st.lists(ratios | st.just(math.nan), min_size=len(prev), max_size=len(prev)))
    got = advance_many(np.array(prev, dtype=np.int8), np.array(rs), hyst)
    assert got.tolist() == [int(advance(Status(p), r, hyst)) for p, r in zip(prev, rs, strict=True)]


@settings(max_examples=60, deadline=None)
@given(
    level=st.sampled_from([1, 2, 3]),
    band=st.sampled_from([0.0, 0.02, 0.05]),
    data=st.data(),
)
def test_no_flapping_while_the_ratio_oscillates_inside_the_hysteresis_band(
    level: int, band: float, data: st.DataObject
) -> None:
    # no ticks in this scenario: keep the stale-price rule out of the way
    run = Run(1, AlertsConfig(hysteresis=band, min_interval_s=0.0, stale_price_s=1e9))
    enter = ENTER[level - 1]
    ceiling = ENTER[level] if level < 3 else 10.0
    inside = st.floats(min_value=enter - band + 1e-6, max_value=ceiling - 1e-6)
    path = data.draw(st.lists(inside, min_size=1, max_size=40))
    with capture_logs():
        run.set_ratio(0, enter + 1e-4)
        assert [(a.kind, a.severity, a.state) for a in run.alerts] == [
            ("margin", Status(level).label, "firing"),
            ("contagion", Status(level).label, "firing"),
        ]
        before = len(run.alerts)
        for r in path:
            run.set_ratio(0, r)
            run.wait(1_000)
    assert run.alerts[before:] == []


@settings(max_examples=80, deadline=None)
@given(
    accounts=st.integers(1, 3),
    interval_s=st.sampled_from([0.0, 30.0, 60.0]),
    steps=st.lists(
        st.tuples(st.integers(0, 2), ratios, st.integers(0, 40_000)), min_size=1, max_size=50
    ),
)
def test_every_firing_has_exactly_one_resolution_once_the_accounts_recover(
    accounts: int, interval_s: float, steps: list[tuple[int, float, int]]
) -> None:
    run = Run(accounts, AlertsConfig(min_interval_s=interval_s, stale_price_s=1e9))
    with capture_logs():
        for k, r, wait_ms in steps:
            run.set_ratio(k % accounts, r)
            run.wait(wait_ms)
        for k in range(accounts):
            run.set_ratio(k, 0.1)
        run.wait(round(interval_s * 1000) + 1)
    for key, states in unit_streams(run.alerts).items():
        assert states == ["firing", "resolved"] * (len(states) // 2), key
    summary = run.engine.summary(run.book)
    assert summary["firing"] == {"margin": 0, "contagion": 0, "stale_price": 0}
    assert summary["deferred"] == 0


@settings(max_examples=40, deadline=None)
@given(
    interval_s=st.sampled_from([0.0, 60.0]),
    steps=st.lists(
        st.tuples(st.integers(0, 1), ratios, st.integers(0, 90_000)), min_size=1, max_size=40
    ),
)
def test_ids_and_bytes_are_stable_across_a_replay_of_the_same_input(
    interval_s: float, steps: list[tuple[int, float, int]]
) -> None:
    def replay() -> list[bytes]:
        run = Run(2, AlertsConfig(min_interval_s=interval_s, stale_price_s=1e9))
        with capture_logs():
            for k, r, wait_ms in steps:
                run.set_ratio(k, r)
                run.wait(wait_ms)
        ids = [a.id for a in run.alerts]
        assert len(set(ids)) == len(ids)
        return [a.to_json_bytes() for a in run.alerts]

    assert replay() == replay()


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.tuples(ratios, st.integers(0, 30_000)), min_size=1, max_size=60),
)
def test_at_most_one_firing_per_kind_and_interval_except_escalations_and_resolutions(
    steps: list[tuple[float, int]],
) -> None:
    interval_ms = 60_000
    run = Run(1, AlertsConfig(min_interval_s=interval_ms / 1000, stale_price_s=1e9))
    batches: list[list[Alert]] = []
    with capture_logs():
        for r, wait_ms in steps:
            start = len(run.alerts)
            run.set_ratio(0, r)
            batches.append(run.alerts[start:])
            start = len(run.alerts)
            run.wait(wait_ms)
            batches.append(run.alerts[start:])
    window: dict[str, tuple[int, int]] = {}  # kind -> (window start, highest severity)
    for batch in batches:
        for kind in ("margin", "contagion"):
            mine = [a for a in batch if a.kind == kind]
            replacing = any(a.state == "resolved" for a in mine)
            for a in mine:
                if a.state == "resolved":
                    continue
                sev = int(Status[a.severity.upper()])
                start, peak = window.get(kind, (-(10**15), 0))
                expired = a.emitted_at - start >= interval_ms
                # a plain firing needs an expired window or a higher severity; the
                # level left standing when a higher one resolves goes out regardless
                assert replacing or expired or sev > peak
                window[kind] = (a.emitted_at, sev) if expired else (start, max(peak, sev))
