"""Prometheus metrics of the alert engine and the MQTT sink.

Each takes an injectable registry (tests use a fresh one). Labels are bounded
(kind, state, queue); never an account id. A metric already registered under
the same name (another component's ``monitor_queue_depth``, or a second engine
on the same registry) is reused rather than registered twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

_M = TypeVar("_M", Counter, Gauge)


def _metric(
    cls: type[_M],
    name: str,
    doc: str,
    labels: Sequence[str],
    registry: CollectorRegistry,
) -> _M:
    try:
        return cls(name, doc, labels, registry=registry)
    except ValueError:
        # Already registered in this registry: use that collector. prometheus_client
        # has no public lookup, so read its name table.
        names: dict[str, Any] = getattr(registry, "_names_to_collectors", {})
        for key in (name, f"{name}_total"):
            found = names.get(key)
            if isinstance(found, cls):
                return found
        raise


class AlertMetrics:
    """Alerts emitted by kind and state; firings held back by flood control."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = REGISTRY if registry is None else registry
        self.alerts = _metric(
            Counter, "monitor_alerts", "Alerts emitted, by kind and state.", ("kind", "state"), reg
        )
        self.suppressed = _metric(
            Counter,
            "monitor_alerts_suppressed",
            "Alert firings held back by flood control, by kind.",
            ("kind",),
            reg,
        )


class MqttMetrics:
    """Connection state, drops and queue depth of the MQTT sink."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = REGISTRY if registry is None else registry
        self.connected = _metric(
            Gauge, "monitor_mqtt_connected", "1 while connected to the MQTT broker.", (), reg
        )
        self.dropped = _metric(
            Counter,
            "monitor_mqtt_dropped",
            "Alerts dropped by the MQTT sink because its queue was full.",
            (),
            reg,
        )
        self.queue_depth = _metric(
            Gauge, "monitor_queue_depth", "Items waiting in an internal queue.", ("queue",), reg
        )
