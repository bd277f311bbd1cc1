"""Alerts: the risk-status state machine, alert rules and the alert record.

- :mod:`~monitor.alerts.fsm`: levels, hysteresis, the transition table;
- :mod:`~monitor.alerts.engine`: ``AlertEngine``, from dirty accounts to alerts;
- :mod:`~monitor.alerts.model`: :class:`Alert` and its JSON wire form;
- :mod:`~monitor.alerts.config`: ``[alerts]`` and ``[mqtt]`` settings;
- :mod:`~monitor.alerts.bench`: MQTT throughput, per alert and batched.

The package itself imports only the light modules (the config loader reads
:mod:`~monitor.alerts.config` without pulling in the book).
"""

from monitor.alerts.config import AlertsConfig, MqttConfig
from monitor.alerts.model import Alert, Culprit, SubAccountLoss, Trigger, Victim, alert_id

__all__ = [
    "Alert",
    "AlertsConfig",
    "Culprit",
    "MqttConfig",
    "SubAccountLoss",
    "Trigger",
    "Victim",
    "alert_id",
]
