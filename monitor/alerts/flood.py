"""Flood control: per unit and kind at most one firing per interval, except
escalations (a severity above every one fired in the current window).

A suppressed firing is not forgotten: it is remembered with the time it
becomes allowed, and the engine revisits the unit then. If the unit has
recovered meanwhile, nothing is owed and nothing is sent; otherwise the
firing goes out late. Resolutions are never held back.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable
from typing import Any

Key = Hashable


class FloodControl:
    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = interval_ms
        self._windows: dict[Key, tuple[int, int]] = {}  # key -> (window start, peak severity)
        self._pending: dict[Key, tuple[int, int]] = {}  # key -> (due, severity owed)
        self._heap: list[tuple[int, int, Key]] = []
        self._seq = itertools.count()
        self._last_prune = 0

    def allow(self, key: Key, severity: int, now_ms: int) -> bool:
        """Whether a firing may go out now; records it in the window if so."""
        w = self._windows.get(key)
        if w is None or now_ms - w[0] >= self.interval_ms:
            self._windows[key] = (now_ms, severity)
        elif severity > w[1]:
            self._windows[key] = (w[0], severity)
        else:
            return False
        self._pending.pop(key, None)
        return True

    def record(self, key: Key, severity: int, now_ms: int) -> None:
        """A firing that went out regardless (one that replaces a resolved level)."""
        w = self._windows.get(key)
        if w is None or now_ms - w[0] >= self.interval_ms:
            self._windows[key] = (now_ms, severity)
        else:
            self._windows[key] = (w[0], max(w[1], severity))

    def defer(self, key: Key, severity: int) -> bool:
        """Remember a suppressed firing; True if it is a new suppression (to count)."""
        prev = self._pending.get(key)
        if prev is not None and prev[1] >= severity:
            return False
        start = self._windows[key][0]
        due = start + self.interval_ms
        self._pending[key] = (due, severity)
        heapq.heappush(self._heap, (due, next(self._seq), key))
        return True

    def settle(self, key: Key) -> None:
        """Nothing is owed for this key any more."""
        self._pending.pop(key, None)

    def due(self, now_ms: int) -> list[Key]:
        """Keys with a suppressed firing whose window has passed; they leave the
        pending set (the engine revisits them: a firing still owed is allowed now)."""
        out: list[Key] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            due, _, key = heapq.heappop(heap)
            held = self._pending.get(key)
            if held is not None and held[0] == due:
                del self._pending[key]
                out.append(key)
        self._prune(now_ms)
        return out

    def rekey(self, fn: Callable[[Any], Key | None]) -> None:
        """Rename keys (``fn`` returns the new key, or None to forget one)."""
        windows: dict[Key, tuple[int, int]] = {}
        for k, w in self._windows.items():
            if (nk := fn(k)) is not None:
                windows[nk] = w
        pending: dict[Key, tuple[int, int]] = {}
        for k, p in self._pending.items():
            if (nk := fn(k)) is not None:
                pending[nk] = p
        self._windows, self._pending = windows, pending
        self._heap = [(due, next(self._seq), k) for k, (due, _) in pending.items()]
        heapq.heapify(self._heap)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _prune(self, now_ms: int) -> None:
        # Windows that have expired carry no information: drop them now and then,
        # so the table stays as small as the set of recently alerting units.
        if now_ms - self._last_prune < max(self.interval_ms, 1000):
            return
        self._last_prune = now_ms
        horizon = now_ms - self.interval_ms
        self._windows = {k: w for k, w in self._windows.items() if w[0] > horizon}
