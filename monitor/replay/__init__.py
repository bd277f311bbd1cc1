"""Replay: recorded tick and account streams through the daemon's engine.

- :mod:`~monitor.replay.reader`, :mod:`~monitor.replay.parse`: files as columns;
- :mod:`~monitor.replay.merge`: several files merged by event time;
- :mod:`~monitor.replay.driver`: :class:`Replay`, the engine driven by event time;
- :mod:`~monitor.replay.recorder`, :mod:`~monitor.replay.summary`: what is kept
  and the end-of-run summary; :mod:`monitor.report` draws the HTML report;
- :mod:`~monitor.replay.ticks`: runs of ticks applied in one compiled call;
- :mod:`~monitor.replay.console`: alerts as readable lines on a terminal.

The throughput figures are :mod:`monitor.bench.replay` (``monitor bench --suite replay``).
"""

from monitor.replay.driver import Replay, ReplayOptions, ReplayResult, ReplayStats

__all__ = ["Replay", "ReplayOptions", "ReplayResult", "ReplayStats"]
