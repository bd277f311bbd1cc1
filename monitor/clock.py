"""Injected clocks: the daemon runs on wall time, replay on event time.

Domain code never calls ``time.time()``; it is handed a :class:`Clock`.
All times are integer epoch milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Current processing time, epoch milliseconds."""
        ...

    async def sleep_until(self, t_ms: int) -> None:
        """Wait until ``now_ms() >= t_ms``."""
        ...


class WallClock:
    """Processing time is the machine's wall time."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep_until(self, t_ms: int) -> None:
        delay = (t_ms - self.now_ms()) / 1000.0
        if delay > 0:
            await asyncio.sleep(delay)


class ManualClock:
    """A clock that only moves when told to: replay at max speed, and tests."""

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def set(self, t_ms: int) -> None:
        """Move to ``t_ms``; never backwards."""
        if t_ms > self._now:
            self._now = t_ms

    def advance(self, delta_ms: int) -> None:
        self._now += max(0, delta_ms)

    async def sleep_until(self, t_ms: int) -> None:
        self.set(t_ms)
