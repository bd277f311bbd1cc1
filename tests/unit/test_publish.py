"""`monitor publish` without a broker: pacing on an injected clock, re-stamping
with --retime, and the merge of several files by event time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.cli.commands.publish import Out, messages, paced, retimed, shift_ts
from monitor.clock import ManualClock

pytestmark = pytest.mark.timeout(10)


def out(t: int, value: bytes | None = None, timestamp: int | None = None) -> Out:
    return Out(t, "prices", b"BTC-PERP", value, timestamp, None)


async def release_times(
    stream: list[Out], speed: float, clock: ManualClock, start_ms: int | None = None
) -> tuple[list[int], list[int]]:
    """Clock time at which each message is released, and at each flush."""
    flushes: list[int] = []

    async def flush() -> None:
        flushes.append(clock.now_ms())

    released = [clock.now_ms() async for _ in paced(stream, speed, clock, flush, start_ms)]
    return released, flushes


async def test_messages_are_released_at_their_event_time_offset_scaled_by_speed() -> None:
    clock = ManualClock(5_000)
    stream = [out(1_000), out(1_400), out(1_400), out(2_000)]
    released, flushes = await release_times(stream, 2.0, clock)
    assert released == [5_000, 5_200, 5_200, 5_500]
    # What is batched goes out before each wait, not after it.
    assert flushes == [5_000, 5_200]


async def test_real_time_pacing_keeps_the_recorded_spacing() -> None:
    clock = ManualClock(0)
    released, _ = await release_times([out(10), out(15), out(1_010)], 1.0, clock)
    assert released == [0, 5, 1_000]


async def test_speed_zero_never_waits() -> None:
    clock = ManualClock(7)
    released, flushes = await release_times([out(0), out(60_000), out(120_000)], 0.0, clock)
    assert released == [7, 7, 7] and flushes == []


async def test_a_late_start_sends_what_is_overdue_at_once() -> None:
    # The clock is already past the first due times (a slow producer start).
    clock = ManualClock(10_000)
    released, flushes = await release_times([out(0), out(500), out(3_000)], 1.0, clock, 9_000)
    assert released == [10_000, 10_000, 12_000]
    assert flushes == [10_000]


def test_retime_moves_the_first_event_to_the_start_and_keeps_the_spacing() -> None:
    start = 1_900_000_000_000
    stream = [
        out(1_000, b'{"symbol":"BTC-PERP","price":1.5,"ts":1000}', 1_000),
        out(1_250, b'{"type":"balance","account":"A","asset":"USDT","amount":2,"ts":1250}', 1_250),
        out(4_000, b'{"symbol":"BTC-PERP","price":2.0,"ts":4000}', 4_000),
    ]
    got = list(retimed(stream, start))
    assert [m.time_ms for m in got] == [start, start + 250, start + 3_000]
    assert [m.timestamp for m in got] == [start, start + 250, start + 3_000]
    values = [json.loads(m.value or b"") for m in got]
    assert [v["ts"] for v in values] == [start, start + 250, start + 3_000]
    # Only the time moves.
    assert values[0] == {"symbol": "BTC-PERP", "price": 1.5, "ts": start}
    assert values[1]["amount"] == 2 and values[1]["account"] == "A"
    assert [(m.topic, m.key, m.partition) for m in got] == [(m.topic, m.key, m.partition)
                                                            for m in stream]  # fmt: skip


def test_retime_leaves_values_without_an_event_time_alone() -> None:
    for value in (b"not json", b"[1, 2]", b'{"price": 1}', b'{"ts": "soon"}', b'{"ts": true}'):
        assert shift_ts(value, 1_000) == value
    (tomb,) = retimed([out(5, None, None)], 100)
    assert tomb.value is None and tomb.timestamp is None and tomb.time_ms == 100


def test_files_merge_by_event_time_so_a_book_applies_before_the_ticks(tmp_path: Path) -> None:
    import heapq

    book = tmp_path / "book.jsonl"
    ticks = tmp_path / "ticks.jsonl"
    book.write_text(
        '{"type":"balance","account":"A","asset":"USDT","amount":1000,"ts":100}\n'
        '{"type":"position","account":"A","symbol":"BTC-PERP","qty":1,"entry_price":10,"ts":100}\n'
    )
    ticks.write_text(
        '{"symbol":"BTC-PERP","price":10,"ts":100}\n{"symbol":"BTC-PERP","price":9,"ts":150}\n'
    )
    bad: list[str] = []
    streams = [messages(str(p), "prices", "events", bad) for p in (book, ticks)]
    merged = list(heapq.merge(*streams, key=lambda m: m.time_ms))
    assert bad == []
    assert [(m.topic, m.time_ms) for m in merged] == [
        ("events", 100), ("events", 100), ("prices", 100), ("prices", 150),
    ]  # fmt: skip
    assert [m.key for m in merged] == [b"A", b"A", b"BTC-PERP", b"BTC-PERP"]
