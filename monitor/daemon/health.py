"""Liveness and readiness of the daemon, and the log line of each state change.

- *healthy*: polling and not stalled. Unhealthy while starting, when the
  broker is unreachable (the periodic metadata probe failed), when no
  successful poll happened for ``stall_after_s``, when queued input has not
  been applied for ``stall_after_s``, or once stopping.
- *ready*: state loaded (snapshot or rebuild started) and caught up with every
  assigned partition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from monitor.clock import Clock
from monitor.logs import get_logger

log = get_logger("monitor.daemon")


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str | None = None

    def body(self, **extra: object) -> dict[str, object]:
        out: dict[str, object] = {"status": "ok" if self.ok else "unavailable"}
        if self.reason:
            out["reason"] = self.reason
        out.update(extra)
        return out


class Health:
    """State the health endpoints and metrics read; logs each transition once."""

    def __init__(self, clock: Clock, stall_after_s: float) -> None:
        self.clock = clock
        self.stall_ms = int(stall_after_s * 1000)
        self.phase = "starting"  # starting -> running -> stopping
        self.last_poll_ms: dict[str, int] = {}
        self.broker_error: str | None = None
        self.state_loaded = False
        self.caught_up = False
        self.catch_up_detail = "loading state"
        self.pending_since_ms: int | None = None  # queued input not yet applied since
        self._was_healthy: bool | None = None
        self.fatal: str | None = None

    # ---------------------------------------------------------- inputs
    def polled(self, feed: str) -> None:
        """A poll completed; it counts only while the broker answers."""
        if self.broker_error is None:
            self.last_poll_ms[feed] = self.clock.now_ms()

    def broker_ok(self) -> None:
        if self.broker_error is not None:
            log.info("broker reachable again")
        self.broker_error = None

    def broker_down(self, error: str) -> None:
        if self.broker_error is None:
            log.warning("broker unreachable", error=error)
        self.broker_error = error or "unreachable"

    def set_ready(self, ready: bool, detail: str = "") -> None:
        if ready and not self.caught_up:
            log.info("caught up")
        self.caught_up = ready
        self.catch_up_detail = detail

    # ---------------------------------------------------------- verdicts
    def seconds_since_last_poll(self) -> float:
        if not self.last_poll_ms:
            return math.inf
        return max(0.0, (self.clock.now_ms() - min(self.last_poll_ms.values())) / 1000.0)

    def liveness(self) -> Verdict:
        now = self.clock.now_ms()
        if self.fatal is not None:
            v = Verdict(False, self.fatal)
        elif self.phase == "starting":
            v = Verdict(False, "starting")
        elif self.phase == "stopping":
            v = Verdict(False, "stopping")
        elif self.broker_error is not None:
            v = Verdict(False, f"broker unreachable: {self.broker_error}")
        else:
            since = self.seconds_since_last_poll()
            if since * 1000 > self.stall_ms:
                v = Verdict(False, f"no successful poll for {since:.1f} s")
            elif self.pending_since_ms is not None and now - self.pending_since_ms > self.stall_ms:
                v = Verdict(
                    False,
                    f"queued input not applied for {(now - self.pending_since_ms) / 1000:.1f} s",
                )
            else:
                v = Verdict(True)
        # Transitions are logged once the daemon has been healthy at least once.
        if self.phase == "running" and (self._was_healthy is not None or v.ok):
            if self._was_healthy is not None and v.ok != self._was_healthy:
                if v.ok:
                    log.info("recovered")
                else:
                    log.warning("stalled", reason=v.reason)
            self._was_healthy = v.ok
        return v

    def readiness(self) -> Verdict:
        if not self.state_loaded:
            return Verdict(False, "loading state")
        if not self.caught_up:
            return Verdict(False, self.catch_up_detail or "catching up")
        if self.phase == "stopping":
            return Verdict(False, "stopping")
        return Verdict(True)
