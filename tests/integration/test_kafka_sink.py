"""The Kafka alert sink against a real broker (Tansu): batched enqueueing on the
partition of each key with per-key order kept, and a broker outage that never
raises from publish, makes the checkpoint's flush fail, and loses nothing."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from structlog.testing import capture_logs

from monitor.alerts.bench import sample_alerts
from monitor.alerts.model import Alert, AlertBatch, from_json_bytes
from monitor.clock import ManualClock
from monitor.engine import DeliveryError, Engine
from monitor.instruments import RiskParams
from monitor.sinks.kafka import KafkaAlertSink
from tests.support.tansu import TansuBroker, consume_all, create_topics, unique

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
PARTITIONS = 4


def alerts_of(accounts: int, per_account: int) -> list[Alert]:
    """``per_account`` alerts for each account, interleaved as a stream would be."""
    base = sample_alerts(accounts * per_account)
    return [msgspec.structs.replace(a, account=f"acct-{k % accounts}") for k, a in enumerate(base)]


async def test_alerts_are_batched_onto_the_partition_of_their_key_in_order() -> None:
    with TansuBroker() as broker:
        topic = unique("alerts")
        await create_topics(broker.bootstrap, [topic], partitions=PARTITIONS)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        try:
            sink = KafkaAlertSink(topic, producer)
            await sink.start()
            sent = alerts_of(300, 10)
            await sink.publish(AlertBatch(sent[:1000]))
            await sink.publish(sent[1000:])
            await sink.flush(30.0)
            assert sink.delivered == len(sent) and sink.pending == 0
        finally:
            await producer.stop()
        records = await consume_all(broker.bootstrap, topic, len(sent))
    assert len(records) == len(sent)
    part = DefaultPartitioner()
    parts = list(range(PARTITIONS))
    got: dict[str, list[str]] = {}
    for r in records:
        assert r.partition == part(r.key, parts, parts)  # where send() would have put it
        alert = from_json_bytes(r.value)
        assert r.key == alert.account.encode()
        got.setdefault(alert.account, []).append(alert.id)
    want: dict[str, list[str]] = {}
    for a in sent:
        want.setdefault(a.account, []).append(a.id)
    assert got == want  # per account, in publish order


async def test_a_broker_outage_fails_the_flush_never_the_publish_and_loses_nothing(
    small_params: RiskParams,
) -> None:
    broker = TansuBroker()
    broker.start()
    try:
        topic = unique("alerts")
        await create_topics(broker.bootstrap, [topic], partitions=2)
        sink = KafkaAlertSink(
            topic, bootstrap_servers=broker.bootstrap, request_timeout_ms=1500,
            retry_backoff_ms=50,
        )  # fmt: skip
        engine = Engine(small_params, ManualClock(0), sinks=[sink])
        await engine.start()
        stream = alerts_of(20, 3)
        first, during, after = stream[:20], stream[20:40], stream[40:]
        with capture_logs() as logs:
            await engine.publish(first)
            await engine.flush(10.0)
            broker.stop()
            await engine.publish(during)  # returns: the daemon keeps running
            with pytest.raises(DeliveryError, match="not delivered"):
                await engine.flush(3.0)  # the checkpoint is skipped
            await engine.publish(after)  # held back behind the failure
            assert sink.pending == 40
            broker.start()  # same port; its memory storage starts empty again
            await create_topics(broker.bootstrap, [topic], partitions=2)
            for _ in range(10):
                try:
                    await engine.flush(5.0)
                    break
                except DeliveryError:
                    await asyncio.sleep(0.2)
            assert sink.pending == 0
            await engine.close()
        assert any(e["event"].startswith("kafka send failed") for e in logs)
        records = await consume_all(broker.bootstrap, topic, 40)
    finally:
        broker.stop()
    got: dict[str, list[str]] = {}
    for r in records:
        a = from_json_bytes(r.value)
        got.setdefault(a.account, []).append(a.id)
    want: dict[str, list[str]] = {}
    for a in during + after:
        want.setdefault(a.account, []).append(a.id)
    assert got == want  # everything since the outage, per account in order
