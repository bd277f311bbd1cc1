"""Flood control: per account and kind at most one firing per interval, except
escalations (a severity above every one fired in the current window).

Keys are ``("a", account slot, kind)``: an account's cross part and its
isolated positions share one budget per kind, as the issue says ("per account
at most one alert per kind per interval"); market-level alerts use
``("s", symbol id)``. Windows run on the injected processing clock.

A suppressed firing is not forgotten: it is remembered per unit of the key,
with its *cause* (event time and trigger), and the time it becomes allowed;
the engine revisits the account then. If the unit has recovered meanwhile,
nothing is owed and nothing is sent; otherwise the firing goes out late, with
the cause it was held back with (so its id is that of the transition, not of
the moment it was let through). Resolutions are never held back.

Counting: one suppression per *episode* of a key, from the first firing held
back until the key owes nothing (its units settled or its deferred firings
let through), however many levels or units it owed meanwhile.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Key = tuple[Any, ...]
Cause = tuple[int, Any]  # (event ts, Trigger | None)


@dataclass(slots=True)
class Deferred:
    """Firings of one key held back until ``due``: the highest severity owed, and
    the cause of each unit's held-back firing."""

    due: int
    severity: int
    causes: dict[str, Cause] = field(default_factory=dict)


class FloodControl:
    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = interval_ms
        self.windows: dict[Key, tuple[int, int]] = {}  # key -> (window start, peak severity)
        self.deferred: dict[Key, Deferred] = {}
        self._heap: list[tuple[int, int, Key]] = []
        self._seq = itertools.count()
        self._last_prune = 0

    def allow(self, key: Key, severity: int, now_ms: int) -> bool:
        """Whether a firing may go out now; records it in the window if so."""
        w = self.windows.get(key)
        if w is None or now_ms - w[0] >= self.interval_ms:
            self.windows[key] = (now_ms, severity)
        elif severity > w[1]:
            self.windows[key] = (w[0], severity)
        else:
            return False
        return True

    def record(self, key: Key, severity: int, now_ms: int) -> None:
        """A firing that went out regardless (one that replaces a resolved level)."""
        w = self.windows.get(key)
        if w is None or now_ms - w[0] >= self.interval_ms:
            self.windows[key] = (now_ms, severity)
        else:
            self.windows[key] = (w[0], max(w[1], severity))

    def defer(self, key: Key, unit: str, severity: int, cause: Cause) -> bool:
        """Remember a suppressed firing of ``unit``; True if it opens an episode
        (count it)."""
        d = self.deferred.get(key)
        if d is None:
            due = self.windows[key][0] + self.interval_ms
            d = self.deferred[key] = Deferred(due, severity)
            heapq.heappush(self._heap, (due, next(self._seq), key))
            opened = True
        else:
            d.severity = max(d.severity, severity)
            opened = False
        d.causes[unit] = cause
        return opened

    def settle(self, key: Key, unit: str) -> None:
        """``unit`` owes nothing any more (the episode ends with the key's last unit)."""
        d = self.deferred.get(key)
        if d is not None:
            d.causes.pop(unit, None)
            if not d.causes:
                del self.deferred[key]

    def due(self, now_ms: int) -> list[tuple[Key, Deferred]]:
        """Deferred firings whose window has passed; they leave the deferred set (the
        engine revisits them: a firing still owed is allowed now)."""
        out: list[tuple[Key, Deferred]] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            due, _, key = heapq.heappop(heap)
            d = self.deferred.get(key)
            if d is not None and d.due == due:
                del self.deferred[key]
                out.append((key, d))
        self._prune(now_ms)
        return out

    def restore(self, key: Key, window: tuple[int, int] | None, deferred: Deferred | None) -> None:
        """Set one key's state (a restart): its window and what it owes."""
        if window is None:
            self.windows.pop(key, None)
        else:
            self.windows[key] = window
        if deferred is None or not deferred.causes:
            self.deferred.pop(key, None)
        else:
            self.deferred[key] = deferred
            heapq.heappush(self._heap, (deferred.due, next(self._seq), key))

    def rekey(self, fn: Callable[[Any], Key | None]) -> None:
        """Rename keys (``fn`` returns the new key, or None to forget one)."""
        windows: dict[Key, tuple[int, int]] = {}
        for k, w in self.windows.items():
            if (nk := fn(k)) is not None:
                windows[nk] = w
        deferred: dict[Key, Deferred] = {}
        for k, d in self.deferred.items():
            if (nk := fn(k)) is not None:
                deferred[nk] = d
        self.windows, self.deferred = windows, deferred
        self._heap = [(d.due, next(self._seq), k) for k, d in deferred.items()]
        heapq.heapify(self._heap)

    @property
    def pending(self) -> int:
        return len(self.deferred)

    def _prune(self, now_ms: int) -> None:
        # Windows that have expired carry no information: drop them now and then,
        # so the table stays as small as the set of recently alerting accounts.
        if now_ms - self._last_prune < max(self.interval_ms, 1000):
            return
        self._last_prune = now_ms
        horizon = now_ms - self.interval_ms
        self.windows = {k: w for k, w in self.windows.items() if w[0] > horizon}
