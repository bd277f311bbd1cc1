"""Alert sink benchmark, against brokers it starts: how fast a burst of alerts
(a market-wide crash: one per account) leaves the engine.

Kafka (Tansu): the same 100,000 alerts, on fresh topics, in one process,
back to back:

1. *one send() per alert* (the way the sink worked before: each alert awaits
   ``producer.send`` to be enqueued), then every delivery awaited;
2. *the sink* (:class:`~monitor.sinks.kafka.KafkaAlertSink`: per-partition
   ``create_batch``/``send_batch``), ``publish`` then ``flush``.

For each: the time ``publish`` holds the caller (what the evaluation waits for
before the next batch) and the time until every alert is confirmed.

MQTT (Mosquitto, when installed): 200,000 alerts (a 100,000-account crash:
margin and contagion) into a sink with the default queue bounds: drops, and
the time until the broker acknowledged them all.

    python tests/bench/bench_alert_sinks.py [--alerts 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


async def kafka(n: int) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    from monitor.alerts.bench import sample_alerts
    from monitor.alerts.model import AlertBatch, wire_account, wire_bytes
    from monitor.sinks.kafka import KafkaAlertSink
    from tests.support.tansu import TansuBroker, create_topics, unique

    alerts = sample_alerts(n)
    out: dict[str, Any] = {"alerts": n}
    with TansuBroker() as broker:
        one, batched = unique("alerts-one"), unique("alerts-batch")
        await create_topics(broker.bootstrap, [one, batched], partitions=4)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        try:
            await producer.partitions_for(one)
            await producer.partitions_for(batched)
            t0 = time.perf_counter()
            futs = [
                await producer.send(one, value=wire_bytes(a), key=wire_account(a).encode())
                for a in alerts
            ]
            t1 = time.perf_counter()
            await asyncio.gather(*futs)
            t2 = time.perf_counter()
            out["one_send_per_alert"] = {"publish_s": t1 - t0, "delivered_s": t2 - t0}

            sink = KafkaAlertSink(batched, producer)
            await sink.start()
            t0 = time.perf_counter()
            await sink.publish(AlertBatch(alerts))
            t1 = time.perf_counter()
            await sink.flush(120.0)
            t2 = time.perf_counter()
            assert sink.delivered == n
            out["sink"] = {"publish_s": t1 - t0, "delivered_s": t2 - t0}
        finally:
            await producer.stop()
    one_s, sink_s = out["one_send_per_alert"], out["sink"]
    out["publish_speedup"] = one_s["publish_s"] / sink_s["publish_s"]
    out["delivered_speedup"] = one_s["delivered_s"] / sink_s["delivered_s"]
    return out


def have_mosquitto() -> bool:
    return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()


async def mqtt(n: int) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from monitor.alerts.bench import sample_alerts
    from monitor.alerts.config import MqttConfig
    from monitor.sinks.mqtt import MqttSink
    from tests.support.mosquitto import Mosquitto

    alerts = sample_alerts(n)
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp))
        broker.start()
        try:
            cfg = MqttConfig(enabled=True, host=broker.host, port=broker.port, topic_prefix="bench")
            async with MqttSink(cfg, registry=CollectorRegistry()) as sink:
                await sink.wait_connected(10)
                t0 = time.perf_counter()
                await sink.publish(alerts)
                t1 = time.perf_counter()
                await sink.flush(120.0)
                t2 = time.perf_counter()
                return {
                    "alerts": n,
                    "queue_max": cfg.queue_max,
                    "queue_max_mb": cfg.queue_max_mb,
                    "dropped": sink.dropped,
                    "delivered": sink.delivered,
                    "publish_s": t1 - t0,
                    "delivered_s": t2 - t0,
                }
        finally:
            broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=100_000)
    args = ap.parse_args()
    k = asyncio.run(kafka(args.alerts))
    print(
        f"kafka, {k['alerts']:,} alerts (Tansu, 4 partitions)\n"
        f"  one send() per alert: publish {k['one_send_per_alert']['publish_s']:.3f} s, "
        f"all delivered {k['one_send_per_alert']['delivered_s']:.3f} s\n"
        f"  sink (send_batch):    publish {k['sink']['publish_s']:.3f} s, "
        f"all delivered {k['sink']['delivered_s']:.3f} s\n"
        f"  publish {k['publish_speedup']:.1f}x faster, delivery {k['delivered_speedup']:.1f}x"
    )
    if have_mosquitto():
        m = asyncio.run(mqtt(2 * args.alerts))
        print(
            f"mqtt, {m['alerts']:,} alerts (Mosquitto, queue_max {m['queue_max']:,}, "
            f"queue_max_mb {m['queue_max_mb']})\n"
            f"  dropped {m['dropped']:,}, delivered {m['delivered']:,}; publish "
            f"{m['publish_s']:.3f} s, all acknowledged {m['delivered_s']:.3f} s"
        )


if __name__ == "__main__":
    main()
