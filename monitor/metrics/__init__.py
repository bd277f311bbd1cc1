"""Prometheus metrics of the monitor, all on one injectable registry.

:class:`Metrics` holds the instruments the hot path updates (per batch, never
per message where a batch count will do); :class:`BookCollector` and
:class:`StatusCollector` compute array-wide and daemon-state figures at
scrape time, so the hot path pays nothing for them. Labels are bounded:
topic, partition, reason, status, symbol, queue; never an account id.
"""

from monitor.metrics.collectors import BookCollector, DaemonStatus, StatusCollector
from monitor.metrics.instruments import Metrics

__all__ = ["BookCollector", "DaemonStatus", "Metrics", "StatusCollector"]
