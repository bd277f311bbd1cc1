"""The batching Kafka writer behind the alert sink and the DLQ, against a
producer double that fails on demand: publish never raises for a broker
problem, failed records are sent again in their original order, nothing
overtakes a failure, delivery futures do not pile up, and the partition of a
key is the one aiokafka's default partitioner gives it."""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, TopicAuthorizationFailedError
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from monitor.clock import ManualClock
from monitor.daemon.dlq import DeadLetters
from monitor.engine import DeliveryError
from monitor.events.decode import Rejection, RejectReason
from monitor.metrics import Metrics
from monitor.sinks.base import DeliveryTimeoutError
from monitor.sinks.kafka import BatchProducer, KafkaAlertSink
from monitor.sinks.partition import default_partitions, murmur2_many

pytestmark = pytest.mark.timeout(30)


class Producer:
    """Records what it is given, batch by batch; ``fail_enqueue`` makes
    ``send_batch`` raise, ``fail_delivery`` makes the returned future fail, and
    ``hold`` leaves futures pending until released."""

    def __init__(self, partitions: int = 3) -> None:
        self.parts = set(range(partitions))
        self.fail_enqueue: Exception | None = None
        self.fail_delivery: Exception | None = None
        self.hold = False
        self.futures: list[asyncio.Future[Any]] = []
        self.sent: list[tuple[int, list[tuple[bytes | None, bytes]]]] = []
        self.delivered: list[tuple[bytes | None, bytes]] = []
        self.headers: list[list[tuple[str, bytes]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return self.parts

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(16384, 0)

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        await asyncio.sleep(0)
        if self.fail_enqueue is not None:
            raise self.fail_enqueue
        read = _records(batch)
        records = [(r.key, r.value) for r in read]
        self.headers += [r.headers for r in read]
        self.sent.append((partition, records))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        if self.fail_delivery is not None:
            fut.set_exception(self.fail_delivery)
        elif not self.hold:
            fut.set_result(None)
            self.delivered += records
        else:
            fut.add_done_callback(lambda f, rs=records: self.delivered.extend(rs))
        return fut

    def release(self) -> None:
        for f in self.futures:
            if not f.done():
                f.set_result(None)


def _records(batch: Any) -> list[Any]:
    from aiokafka.record.default_records import DefaultRecordBatch

    return list(DefaultRecordBatch(bytes(batch._build())))


def recs(n: int, keys: int = 5, start: int = 0) -> list[tuple[bytes, bytes, list[Any]]]:
    return [(f"k{i % keys}".encode(), f"v{i}".encode(), []) for i in range(start, start + n)]


def by_key(delivered: list[tuple[bytes | None, bytes]]) -> dict[bytes | None, list[bytes]]:
    out: dict[bytes | None, list[bytes]] = {}
    for k, v in delivered:
        out.setdefault(k, []).append(v)
    return out


async def test_records_go_out_in_batches_on_the_default_partition_of_their_key() -> None:
    prod = Producer(partitions=3)
    out = BatchProducer(prod, "t", name="test")  # type: ignore[arg-type]
    await out.send(recs(500, keys=50))
    await out.flush(5.0)
    assert out.delivered == 500 and out.pending == 0
    assert len(prod.sent) < 20  # batches, not one request per record
    part = DefaultPartitioner()
    for p, records in prod.sent:
        assert {part(k, [0, 1, 2], [0, 1, 2]) for k, _ in records} == {p}
    assert by_key(prod.delivered) == by_key([(k, v) for k, v, _ in recs(500, keys=50)])


async def test_a_failed_delivery_is_recorded_and_sent_again_in_order_at_the_flush() -> None:
    prod = Producer()
    out = BatchProducer(prod, "t", name="test")  # type: ignore[arg-type]
    prod.fail_delivery = TopicAuthorizationFailedError()
    with capture_logs() as logs:
        await out.send(recs(10))  # never raises
        await out.send(recs(10, start=10))  # held back: must not overtake the failure
    assert prod.delivered == [] and out.pending == 20
    assert any(e["event"].startswith("kafka send failed") for e in logs)
    with capture_logs(), pytest.raises(DeliveryTimeoutError, match="TopicAuthorizationFailed"):
        await out.flush(1.0)
    prod.fail_delivery = None
    with capture_logs():
        await out.flush(5.0)
    assert out.pending == 0
    assert by_key(prod.delivered) == by_key([(k, v) for k, v, _ in recs(20)])


async def test_an_enqueue_that_raises_is_recorded_not_raised() -> None:
    prod = Producer()
    out = BatchProducer(prod, "t", name="test")  # type: ignore[arg-type]
    prod.fail_enqueue = KafkaTimeoutError()
    with capture_logs():
        await out.send(recs(7))
        assert out.pending == 7
        with pytest.raises(DeliveryTimeoutError, match="7 record"):
            await out.flush(1.0)
    prod.fail_enqueue = None
    await out.flush(5.0)
    assert sorted(v for _, v in prod.delivered) == sorted(v for _, v, _ in recs(7))


async def test_a_flush_cut_short_keeps_what_it_did_not_send() -> None:
    prod = Producer()
    prod.hold = True
    out = BatchProducer(prod, "t", name="test")  # type: ignore[arg-type]
    await out.send(recs(30))
    with pytest.raises(DeliveryTimeoutError, match="30 not confirmed"):
        await out.flush(0.05)
    assert out.pending == 30  # nothing forgotten
    prod.release()
    await out.flush(5.0)
    assert out.pending == 0 and out.delivered == 30


async def test_completed_deliveries_are_not_kept() -> None:
    prod = Producer()
    out = BatchProducer(prod, "t", name="test")  # type: ignore[arg-type]
    for k in range(200):
        await out.send(recs(3, start=3 * k))
    # only what completed since the last call is held until the next one
    assert out.batches_in_flight <= 3
    assert out.delivered >= 597


async def test_the_alert_sink_never_raises_for_the_broker_and_the_flush_does() -> None:
    from monitor.alerts.bench import sample_alerts

    prod = Producer()
    sink = KafkaAlertSink("alerts", prod)  # type: ignore[arg-type]
    await sink.start()
    prod.fail_enqueue = KafkaTimeoutError()
    with capture_logs():
        await sink.publish(sample_alerts(5))
        with pytest.raises(DeliveryTimeoutError):
            await sink.flush(0.5)
    prod.fail_enqueue = None
    await sink.flush(5.0)
    assert sorted(k for k, _ in prod.delivered) == [f"bench-{i}".encode() for i in range(5)]
    assert sink.delivered == 5 and sink.pending == 0


class Rec:
    def __init__(self, k: int) -> None:
        self.topic, self.partition, self.offset = "account-events", 0, k
        self.key, self.value = f"A{k}".encode(), b"{bad"


async def test_dead_letters_survive_a_failed_send_and_the_flush_raises_delivery_error() -> None:
    prod = Producer()
    dlq = DeadLetters(prod, "dlq", Metrics(CollectorRegistry()), ManualClock(0))  # type: ignore[arg-type]
    prod.fail_delivery = TopicAuthorizationFailedError()
    with capture_logs():
        for k in range(4):
            dlq.add(Rec(k), Rejection(RejectReason.MALFORMED_JSON, "not JSON"))
        await dlq.pump()  # never raises
        assert dlq.pending == 4
        with pytest.raises(DeliveryError, match="dead letters"):
            await dlq.flush(0.5)
    prod.fail_delivery = None
    await dlq.flush(5.0)
    assert dlq.pending == 0
    assert [k for k, _ in prod.delivered] == [b"A0", b"A1", b"A2", b"A3"]
    headers = dict(prod.headers[-1])
    assert headers["reason"] == b"malformed_json" and headers["offset"] == b"3"
    assert headers["source_topic"] == b"account-events"


@given(st.lists(st.binary(max_size=40), max_size=50))
def test_the_vectorised_murmur2_is_kafkas(keys: list[bytes]) -> None:
    assert murmur2_many(keys).tolist() == [murmur2(k) for k in keys]


def test_the_partition_of_a_key_is_the_default_partitioners() -> None:
    rng = random.Random(3)
    keys = [os.urandom(rng.randrange(1, 30)) for _ in range(2000)]
    parts = [0, 1, 2, 3, 4, 5, 6]
    part = DefaultPartitioner()
    assert default_partitions(keys, parts).tolist() == [part(k, parts, parts) for k in keys]
