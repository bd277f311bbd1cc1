"""The progress line of a replay on a terminal (rich), silent otherwise.

Shows events read, the event-time position, alerts so far and events per
second of processing. Updated at most every ``refresh_s`` so it costs nothing
measurable on the max-speed path.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


def event_time_text(ts: int | None) -> str:
    """``2021-05-19 13:20:20.000`` (UTC) for epoch milliseconds."""
    if ts is None or ts < 0:
        return "-"
    return datetime.fromtimestamp(ts / 1000.0, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


class ReplayProgress:
    """A one-line live display; ``enabled=None`` means: only on a terminal."""

    def __init__(
        self, console: Console | None = None, *, enabled: bool | None = None, refresh_s: float = 0.1
    ) -> None:
        self.console = console if console is not None else Console(stderr=True)
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self.refresh_s = refresh_s
        self._progress: Progress | None = None
        self._task: Any = None
        self._t0 = 0.0
        self._next = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()
        if not self.enabled:
            return
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("replay"),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("replay", total=None, stats="")

    def due(self) -> bool:
        return self._progress is not None and time.perf_counter() >= self._next

    def update(
        self, events: int, event_ts: int | None, alerts: int, *, force: bool = False
    ) -> None:
        if self._progress is None:
            return
        now = time.perf_counter()
        if not force and now < self._next:
            return
        self._next = now + self.refresh_s
        rate = events / max(now - self._t0, 1e-9)
        stats = (
            f"events {events:,}  at {event_time_text(event_ts)}  alerts {alerts:,}  "
            f"{rate:,.0f} events/s"
        )
        self._progress.update(self._task, stats=stats)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


__all__ = ["ReplayProgress", "event_time_text"]
