"""MQTT throughput of the alert sink against a broker: alerts per second,
one message per alert versus JSON arrays (batch mode).

Both runs go through :class:`monitor.sinks.mqtt.MqttSink` itself (QoS 1, every
message acknowledged by the broker before the clock stops), forced into one
mode each. Used by ``monitor bench``; needs a reachable broker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from prometheus_client import CollectorRegistry

from monitor.alerts.config import MqttConfig
from monitor.alerts.model import Alert, Culprit, Trigger, Victim, alert_id


def sample_alerts(n: int) -> list[Alert]:
    """``n`` realistic contagion alerts over distinct accounts."""
    out: list[Alert] = []
    for k in range(n):
        account = f"bench-{k}"
        ts = 1_700_000_000_000 + k
        out.append(
            Alert(
                id=alert_id(account, "cross", "contagion", "healthy->critical", ts),
                kind="contagion",
                severity="critical",
                state="firing",
                account=account,
                ts=ts,
                emitted_at=ts + 20,
                margin_ratio=0.91,
                equity=125_000.0,
                maintenance_margin=113_750.0,
                trigger=Trigger("ETH-PERP", 1335.18, ts),
                culprits=(Culprit("ETH-PERP", "desk-2", -448_192.89),),
                victims=(Victim("BTC-PERP", "desk-1", 640_000.0, 12_000.0, 52_000.0, 9_000.0),),
                healthy_notional_at_risk=640_000.0,
            )
        )
    return out


async def _run(config: MqttConfig, alerts: list[Alert], timeout_s: float) -> float:
    from monitor.sinks.mqtt import MqttSink

    async with MqttSink(config, registry=CollectorRegistry()) as sink:
        await sink.wait_connected(timeout_s)
        t0 = time.perf_counter()
        await sink.publish(alerts)
        await sink.flush(timeout_s)
        return len(alerts) / (time.perf_counter() - t0)


async def mqtt_throughput(
    config: MqttConfig,
    *,
    alerts: int = 20_000,
    batch_alerts: int = 100,
    timeout_s: float = 120.0,
) -> dict[str, float]:
    """Acknowledged alerts per second to the broker of ``config``, per alert and in
    batches of ``batch_alerts``; also the wall time of one per-alert publish."""
    data = sample_alerts(alerts)
    base = dataclasses.replace(
        config,
        enabled=True,
        client_id=f"{config.client_id}-bench",
        queue_max=max(config.queue_max, alerts),
        topic_prefix=f"{config.topic_prefix}/bench",
    )
    per_alert = await _run(
        dataclasses.replace(base, publish_rate_limit_per_s=1e18), data, timeout_s
    )
    batched = await _run(
        dataclasses.replace(base, publish_rate_limit_per_s=1e-9, batch_max_alerts=batch_alerts),
        data,
        timeout_s,
    )
    return {
        "alerts": float(alerts),
        "per_alert_per_s": per_alert,
        "per_alert_us": 1e6 / per_alert,
        "batch_alerts": float(batch_alerts),
        "batch_per_s": batched,
    }


def run_mqtt_throughput(config: MqttConfig, **kw: int | float) -> dict[str, float]:
    """Synchronous wrapper for the ``monitor bench`` command."""
    return asyncio.run(mqtt_throughput(config, **kw))  # type: ignore[arg-type]
