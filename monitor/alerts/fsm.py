"""The risk-status state machine of one unit (an account's cross part, or one
isolated position), with hysteresis on the way down.

States are the levels of :class:`monitor.risk.levels.Status`. Two events move
a unit one level at a time, as the table :data:`TRANSITIONS` says:

- ``RISE``: the margin ratio reached the threshold of the next level up;
- ``CLEAR``: the margin ratio fell more than the hysteresis band below the
  threshold of the current level.

A ratio inside the band (``threshold - band <= ratio < threshold``) keeps the
current level, so a ratio oscillating there never flaps.

What the consumers of alerts were told is a set of *active* severities
(a bitmask): :func:`reconcile` says which alerts bring that set in line with
the level, one firing or resolution per severity, so every firing is later
matched by exactly one resolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

from monitor.risk.levels import Status

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]


class Move(Enum):
    RISE = "rise"
    CLEAR = "clear"


@dataclass(frozen=True, slots=True)
class Transition:
    source: Status
    move: Move
    target: Status


H, W, C, L = Status.HEALTHY, Status.WARNING, Status.CRITICAL, Status.LIQUIDATABLE

TRANSITIONS: tuple[Transition, ...] = (
    Transition(H, Move.RISE, W),
    Transition(W, Move.RISE, C),
    Transition(C, Move.RISE, L),
    Transition(L, Move.CLEAR, C),
    Transition(C, Move.CLEAR, W),
    Transition(W, Move.CLEAR, H),
)
_NEXT: dict[tuple[Status, Move], Status] = {(t.source, t.move): t.target for t in TRANSITIONS}


@dataclass(frozen=True, slots=True)
class Hysteresis:
    """Entry thresholds of WARNING, CRITICAL, LIQUIDATABLE and the band below them."""

    enter: tuple[float, float, float]
    band: float

    def rise_at(self, state: Status) -> float:
        """Ratio at which ``state`` moves up (infinite at the top)."""
        return self.enter[state] if state < L else float("inf")

    def clear_below(self, state: Status) -> float:
        """Ratio below which ``state`` moves down (-infinite at the bottom)."""
        return self.enter[state - 1] - self.band if state > H else float("-inf")


def detect(state: Status, ratio: float, hyst: Hysteresis) -> Move | None:
    """The event a ratio raises in ``state`` (None inside the state's range or for NaN)."""
    if state < L and ratio >= hyst.rise_at(state):
        return Move.RISE
    if state > H and ratio < hyst.clear_below(state):
        return Move.CLEAR
    return None


def advance(state: Status, ratio: float, hyst: Hysteresis) -> Status:
    """Apply the table until the ratio raises no more events."""
    # At most three steps: after a RISE the ratio cannot clear (band >= 0) and
    # after a CLEAR it cannot rise, so the walk is monotonic.
    while (move := detect(state, ratio, hyst)) is not None:
        state = _NEXT[(state, move)]
    return state


def stepper(hyst: Hysteresis) -> Callable[[int, float], int]:
    """:func:`advance` on plain ints, for walks over many units: the same moves
    in the same order (RISE tried before CLEAR, the same threshold arithmetic),
    the thresholds unpacked once instead of looked up per step."""
    rise = hyst.enter
    clear = (-math.inf, *(e - hyst.band for e in hyst.enter))  # clear_below(level)

    def step(level: int, ratio: float) -> int:
        while True:
            if level < L and ratio >= rise[level]:
                level += 1
            elif level > H and ratio < clear[level]:
                level -= 1
            else:
                return level

    return step


def advance_many(prev: I8, ratio: F64, hyst: Hysteresis) -> I8:
    """:func:`advance` over arrays: ``max(levels risen to, levels held)``.

    Risen: the thresholds the ratio reaches. Held: the levels up to the previous
    one whose clear point the ratio has not fallen below. Both are prefixes of
    the levels because the thresholds ascend. NaN ratios keep the level."""
    enter = np.asarray(hyst.enter, dtype=np.float64)
    r = ratio[:, None]
    risen = (r >= enter[None, :]).sum(axis=1)
    upto = np.arange(1, 4)[None, :] <= prev.astype(np.int64)[:, None]
    held = (upto & (r >= (enter - hyst.band)[None, :])).sum(axis=1)
    out: I8 = np.maximum(risen, held).astype(np.int8)
    nan = np.isnan(ratio)
    if nan.any():
        out[nan] = prev[nan]
    return out


@dataclass(frozen=True, slots=True)
class Change:
    """One alert to emit: a severity starts firing or is resolved."""

    severity: Status
    firing: bool


def bit(level: int) -> int:
    return 1 << (level - 1)


def top(active: int) -> int:
    """Highest active severity (0 when none)."""
    return active.bit_length()


def reconcile(active: int, level: int) -> tuple[int, tuple[Change, ...]]:
    """See :func:`_reconcile`; looked up in a table (8 active sets x 4 levels)."""
    return _RECONCILED[active][level]


def _reconcile(active: int, level: int) -> tuple[int, tuple[Change, ...]]:
    """Alerts that make the active set agree with ``level``; returns the new set.

    Severities above the level resolve (highest first); then the level itself
    fires unless it is active already. Going up keeps the lower severities
    active (a jump fires only the level reached); going down re-fires a lower
    level that was skipped on the way up, so the highest active severity is
    always the current level."""
    changes: list[Change] = []
    for sev in (L, C, W):
        if sev > level and active & bit(sev):
            changes.append(Change(sev, firing=False))
            active &= ~bit(sev)
    if level > H and not active & bit(level):
        changes.append(Change(Status(level), firing=True))
        active |= bit(level)
    return active, tuple(changes)


_RECONCILED = tuple(tuple(_reconcile(a, lv) for lv in range(4)) for a in range(8))
LABELS = tuple(s.label for s in Status)
