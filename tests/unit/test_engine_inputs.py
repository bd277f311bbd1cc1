"""The engine's input side: tick conflation, the bounded event queue, recordings."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec
from aiokafka import TopicPartition

from monitor.events import Rejection, RejectReason, Tick
from monitor.sources.kafka import EventChunk, EventQueue, RecordedMessage, TickQueue, recorded


def test_the_tick_queue_keeps_the_latest_tick_per_symbol_and_rejects_older_ones() -> None:
    q = TickQueue()
    assert q.offer(Tick("BTC-PERP", 1.0, 10), "r1") is None
    assert q.offer(Tick("BTC-PERP", 2.0, 12), "r2") is None
    assert q.offer(Tick("ETH-PERP", 3.0, 5), "r3") is None
    stale = q.offer(Tick("BTC-PERP", 9.0, 11), "r4")
    assert stale is not None and stale.reason == RejectReason.STALE
    assert q.offer(Tick("BTC-PERP", 2.5, 12), "r5") is None  # same time: the later wins
    q.covered(TopicPartition("p", 0), 7, received_ms=99)
    assert len(q) == 2
    ticks, records, offsets, received = q.take()
    assert sorted((t.symbol, t.price) for t in ticks) == [("BTC-PERP", 2.5), ("ETH-PERP", 3.0)]
    assert sorted(records) == ["r3", "r5"]
    assert offsets == {TopicPartition("p", 0): 7} and received == 99
    assert len(q) == 0 and q.take()[2] == {}


def test_offering_a_decoded_batch_conflates_and_rejects_like_one_tick_at_a_time() -> None:
    bad = Rejection(RejectReason.MALFORMED_JSON, "not JSON")
    batch = [
        Tick("BTC-PERP", 1.0, 10),
        bad,
        Tick("BTC-PERP", 2.0, 12),
        Tick("ETH-PERP", 3.0, 5),
        Tick("BTC-PERP", 9.0, 11),  # stale
        Tick("BTC-PERP", 2.5, 12),
    ]
    records = [f"r{i}" for i in range(len(batch))]
    q = TickQueue()
    rejected: list[tuple[object, Rejection]] = []
    q.offer_all(batch, records, lambda rec, r: rejected.append((rec, r)))
    assert [(rec, r.reason) for rec, r in rejected] == [
        ("r1", RejectReason.MALFORMED_JSON),
        ("r4", RejectReason.STALE),
    ]
    ticks, recs, _, _ = q.take()
    assert sorted(zip((t.price for t in ticks), recs, strict=True)) == [(2.5, "r5"), (3.0, "r3")]


def test_the_event_queue_is_full_at_its_high_water_and_drained_at_its_low_water() -> None:
    q = EventQueue(high_water=10, low_water=4)
    tp = TopicPartition("e", 0)
    q.put(EventChunk(tp, [], list(range(6)), 6))
    assert not q.full and not q.drained
    q.put(EventChunk(tp, [], list(range(6)), 12))
    assert q.full
    chunks = q.take_all()
    assert [c.next_offset for c in chunks] == [6, 12]  # FIFO: partition order kept
    assert q.depth == 0 and q.drained


def _rec(key: bytes | None, value: bytes | None) -> SimpleNamespace:
    return SimpleNamespace(topic="t", partition=1, offset=5, timestamp=7, key=key, value=value)


def test_a_recorded_message_keeps_key_and_value_byte_for_byte() -> None:
    cases = [
        (b"A1", b'{"symbol": "BTC-PERP",  "price": 1.50, "ts": 1}'),  # JSON kept verbatim
        (b"\xff\x00", b"not json"),
        (None, None),
        (b"k", b'{"a":\n1}'),  # multi-line JSON travels as base64
    ]
    enc, dec = msgspec.json.Encoder(), msgspec.json.Decoder(RecordedMessage)
    for key, value in cases:
        line = enc.encode(recorded(_rec(key, value)))
        assert b"\n" not in line
        back = dec.decode(line)
        assert (back.key_bytes(), back.value_bytes()) == (key, value)
        assert (back.topic, back.partition, back.offset, back.timestamp) == ("t", 1, 5, 7)
    line = enc.encode(recorded(_rec(b"A1", b'{"x": 1}')))
    assert (
        line == b'{"topic":"t","partition":1,"offset":5,"key":"A1","timestamp":7,"value":{"x": 1}}'
    )
