"""Where alerts go: MQTT (live dashboards, paging), Kafka (the durable
``alerts`` topic), JSON lines (replay, debugging). All implement
:class:`~monitor.sinks.base.AlertSink`.
"""

from monitor.sinks.base import AlertSink, DeliveryTimeoutError, FanOut, SinkError
from monitor.sinks.file import FileSink

__all__ = ["AlertSink", "DeliveryTimeoutError", "FanOut", "FileSink", "SinkError"]
