"""The arithmetic of the end-to-end benches: percentiles, rates, per-tick latency,
what a probe counts, what is read from /metrics, and the generated loads."""

from __future__ import annotations

import math

import numpy as np
import pytest
from aiokafka import TopicPartition

from monitor.bench.alert_latency import alert_latencies, cause_ts
from monitor.bench.load import (
    BAND_RATIOS,
    account_id,
    band_load,
    events_load,
    mixed_load,
    partition_of,
)
from monitor.bench.probe import Probe
from monitor.bench.scale import Scrape, parse_metrics, settled, stat_cpu_seconds
from monitor.bench.stats import Latency, between, first_reaching, rate, tick_latencies
from monitor.book import MarginBook
from monitor.events import Decoder, Rejection, Tick
from monitor.instruments import load_instruments


def i64(*v: int) -> np.ndarray:
    return np.asarray(v, dtype=np.int64)


def f64(*v: float) -> np.ndarray:
    return np.asarray(v, dtype=np.float64)


def test_latency_summary_uses_every_sample() -> None:
    lat = Latency.of(list(range(1, 101)))  # 1..100 ms
    assert lat.n == 100
    assert lat.p50 == pytest.approx(50.5)
    assert lat.p99 == pytest.approx(99.01)
    assert lat.max == 100.0


def test_latency_summary_of_nothing_is_nan() -> None:
    lat = Latency.of([])
    assert lat.n == 0 and math.isnan(lat.p99) and math.isnan(lat.max)


def test_rate_is_zero_for_an_empty_interval() -> None:
    assert rate(1000, 0.5) == 2000.0
    assert rate(1000, 0.0) == 0.0
    assert rate(0, 1.0) == 0.0


def test_a_conflated_tick_is_evaluated_with_the_tick_that_replaced_it() -> None:
    # Partition 0: ticks at offsets 0..3; one evaluation covered 0..1 (next offset 2)
    # at t=120, the next covered 2..3 at t=150. Offsets 0 and 2 were conflated away.
    ticks = {0: (i64(0, 1, 2, 3), i64(100, 110, 120, 140))}
    evals = {0: (i64(2, 4), f64(120.0, 150.0))}
    lat, missing = tick_latencies(ticks, evals)
    assert missing == 0
    assert sorted(lat.tolist()) == sorted([20.0, 10.0, 30.0, 10.0])


def test_ticks_no_evaluation_covered_are_counted_not_measured() -> None:
    ticks = {
        0: (i64(5, 6, 7), i64(0, 0, 0)),
        1: (
            i64(
                0,
            ),
            i64(10),
        ),
    }
    evals = {
        0: (
            i64(
                7,
            ),
            f64(40.0),
        )
    }  # offset 7 never covered, partition 1 never evaluated
    lat, missing = tick_latencies(ticks, evals)
    assert lat.tolist() == [40.0, 40.0]
    assert missing == 2


def test_the_first_evaluation_covering_a_tick_counts_even_after_a_reread() -> None:
    # Next offsets 3, then 2 (a re-read after a rebalance), then 5: offset 2 was
    # first covered at t=10.
    ticks = {0: (i64(2, 4), i64(0, 0))}
    evals = {0: (i64(3, 2, 5), f64(10.0, 20.0, 30.0))}
    lat, _ = tick_latencies(ticks, evals)
    assert lat.tolist() == [10.0, 30.0]


def test_the_daemons_part_runs_from_each_ticks_fetch_to_its_evaluation() -> None:
    ticks = {0: (i64(0, 1, 2), i64(0, 0, 0))}
    fetched = {0: (i64(2, 3), f64(10.0, 30.0))}  # offsets 0-1 at 10, offset 2 at 30
    evaluated = {0: (i64(1, 3), f64(12.0, 41.0))}  # offset 0 at 12, offsets 1-2 at 41
    part, missing = between(ticks, fetched, evaluated)
    assert part.tolist() == [2.0, 31.0, 11.0] and missing == 0
    part, missing = between({0: (i64(0, 5), i64(0, 0))}, fetched, evaluated)
    assert part.tolist() == [2.0] and missing == 1


def test_first_reaching_is_the_first_sample_at_the_target() -> None:
    assert first_reaching([0.1, 0.2, 0.3], [5, 10, 12], 10) == 0.2
    assert first_reaching([0.1, 0.2], [5, 9], 10) is None


def test_probe_ends_a_measurement_when_every_partition_is_applied() -> None:
    a, b = TopicPartition("px", 0), TopicPartition("ev", 1)
    probe = Probe("px")
    probe.arm({a: 10, b: 5}, applied={b: 2})
    probe.fetched({})
    first = probe.first_fetch
    probe.fetched({})
    assert probe.first_fetch == first is not None
    probe.advanced(a, 10)
    assert probe.done_at is None
    probe.advanced(b, 4)
    assert probe.done_at is None
    probe.advanced(b, 5)
    assert probe.done_at is not None and probe.done_at >= first


def test_probe_arm_ignores_partitions_already_applied() -> None:
    tp = TopicPartition("ev", 0)
    probe = Probe("px")
    probe.arm({tp: 7}, applied={tp: 7})
    assert probe.done_at is not None


class _Rec:
    def __init__(self, offset: int) -> None:
        self.offset = offset


def test_probe_records_evaluations_of_prices_partitions_only() -> None:
    probe = Probe("px")
    probe.record_evaluations()
    probe.advanced(TopicPartition("px", 2), 11)
    probe.advanced(TopicPartition("ev", 2), 99)
    probe.advanced(TopicPartition("px", 2), 15)
    probe.fetched({TopicPartition("px", 2): [_Rec(14)], TopicPartition("ev", 2): [_Rec(98)]})
    assert [c.tolist() for c, _ in probe.fetches().values()] == [[15]]
    ev = probe.evaluations()
    assert list(ev) == [2]
    assert ev[2][0].tolist() == [11, 15]
    assert ev[2][1].shape == (2,)
    assert not probe.recording


METRICS = """# HELP monitor_messages_applied_total Messages applied.
# TYPE monitor_messages_applied_total counter
monitor_messages_applied_total{topic="ev"} 1234.0
monitor_messages_applied_total{topic="px"} 99.0
monitor_ready 1.0
monitor_consumer_lag{partition="3",topic="ev"} 0.0
monitor_consumer_lag{partition="7",topic="ev"} 12.0
monitor_consumer_lag{partition="0",topic="px"} 0.0
"""


def test_parse_metrics_reads_applied_readiness_and_owned_partitions() -> None:
    s = parse_metrics(METRICS, "ev")
    assert s == Scrape(ready=True, applied=1234, partitions=frozenset({3, 7}))
    assert not parse_metrics(METRICS.replace("monitor_ready 1.0", "monitor_ready 0.0"), "ev").ready


def test_settled_needs_every_partition_owned_exactly_once() -> None:
    half = frozenset(range(6))
    other = frozenset(range(6, 12))
    assert settled([Scrape(True, 0, half), Scrape(True, 0, other)])
    assert not settled([Scrape(True, 0, half | {6}), Scrape(True, 0, other)])  # 6 owned twice
    assert not settled([Scrape(True, 0, half), Scrape(True, 0, other - {11})])  # 11 unowned
    assert not settled([Scrape(True, 0, half), Scrape(False, 0, other)])
    assert not settled([Scrape(True, 0, half), None])
    assert settled([Scrape(True, 0, half | other)])


def test_an_alert_is_timed_from_its_trigger_else_from_its_ts() -> None:
    assert cause_ts({"ts": 5, "trigger": {"symbol": "X", "price": 1.0, "ts": 3}}) == 3
    assert cause_ts({"ts": 5, "trigger": None}) == 5
    assert cause_ts({"ts": 5, "trigger": {"symbol": "X", "price": None, "ts": None}}) == 5
    assert cause_ts({"kind": "margin"}) is None


def test_alerts_caused_before_the_stream_are_left_out() -> None:
    got = {"arrival_ms": [100.0, 200.0, 300.0], "cause_ms": [10, 150, 260]}
    lat, before = alert_latencies(got, since_ms=100.0)
    assert lat.tolist() == [50.0, 40.0]
    assert before == 1


def test_partition_of_keeps_a_key_on_one_partition() -> None:
    keys = [account_id(i).encode() for i in range(1000)]
    parts = [partition_of(k, 12) for k in keys]
    assert parts == [partition_of(k, 12) for k in keys]
    assert set(parts) == set(range(12))


def test_mixed_load_has_a_balance_per_account_and_the_asked_size() -> None:
    load = mixed_load(5_000, 1_000)
    assert len(load) == 5_000
    assert len(load.prices) >= 500
    dec = Decoder(load_instruments())
    balances = {dec.decode_event(v).account for _, v in load.events[:1_000]}  # type: ignore[union-attr]
    assert balances == {account_id(i) for i in range(1_000)}
    assert all(type(dec.decode_price(v)) is Tick for _, v in load.prices)


def test_events_load_has_account_events_only() -> None:
    load = events_load(3_000, 1_000)
    assert len(load.events) == 3_000 and not load.prices


def test_band_accounts_start_inside_the_band_and_the_rest_healthy() -> None:
    load = band_load(300, 100)
    params = load_instruments()
    dec = Decoder(params)
    book = MarginBook(params)
    for _, v in load.prices:
        t = dec.decode_price(v)
        assert not isinstance(t, Rejection)
        book.apply_tick(params.symbol_id[t.symbol], t.price, t.ts)
    events = [dec.decode_event(v) for _, v in load.events]
    assert not any(isinstance(e, Rejection) for e in events)
    assert book.apply_batch(events) == []  # type: ignore[arg-type]
    ratio = dict(zip(book.account_ids, book.margin_ratio.tolist(), strict=True))
    band = [ratio[account_id(i)] for i in range(100)]
    rest = [ratio[account_id(i)] for i in range(100, 300)]
    assert BAND_RATIOS[0] - 1e-9 <= min(band) and max(band) <= BAND_RATIOS[1] + 1e-9
    assert max(rest) < 0.5


def test_cpu_seconds_of_a_proc_stat_line_with_spaces_in_the_name() -> None:
    stat = "4242 (monitor run (x)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4"
    assert stat_cpu_seconds(stat, 100.0) == pytest.approx(3.0)
