"""Pacing a replay against a clock: ``--speed X`` plays event time X times
faster than real time; ``speed=None`` (``--max-speed``) never waits.

The clock is injected (:class:`~monitor.clock.WallClock` in production, a
:class:`~monitor.clock.ManualClock` or another fake in tests), so pacing is
tested without sleeping.
"""

from __future__ import annotations

import math

from monitor.clock import Clock
from monitor.errors import ConfigError


class Pacer:
    """Waits, before each event time, until its scaled offset from the first."""

    def __init__(self, speed: float | None, clock: Clock) -> None:
        if speed is not None and not (math.isfinite(speed) and speed > 0.0):
            raise ConfigError(f"--speed: must be a finite number > 0, got {speed!r}")
        self.speed = speed
        self.clock = clock
        self._event0: int | None = None
        self._wall0 = 0
        self._last = -(2**63)
        self.waits = 0

    async def wait(self, ts: int) -> None:
        """Return once the clock reaches the moment event time ``ts`` is due."""
        if self.speed is None:
            return
        if self._event0 is None:
            self._event0 = ts
            self._wall0 = self.clock.now_ms()
            return
        due = self._wall0 + math.ceil((ts - self._event0) / self.speed)
        if due > self._last:
            self._last = due
            self.waits += 1
            await self.clock.sleep_until(due)


__all__ = ["Pacer"]
