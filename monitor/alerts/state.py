"""The alert engine's state as plain JSON values, so it survives a restart
inside the daemon's snapshot (see :meth:`AlertEngine.export_state
<monitor.alerts.engine.AlertEngine.export_state>`).

Keyed by account id and symbol name, never by slot or symbol id: a restored
book numbers its accounts differently, and instruments may be renumbered.

Layout (version 1)::

    {"version": 1,
     "accounts": {"A1": {"level": 2, "margin": 3, "contagion": 2,
                         "isolated": {"ETH-PERP": [3, 4]},
                         "flood": {"margin": {"window": [start_ms, peak],
                                              "deferred": {"due": ms, "severity": 1,
                                                           "causes": {"cross": [ts, trigger]}}}}}},
     "market": {"stale": {"BTC-PERP": {"active": 1, "last_tick_ts": 1700000000000}},
                "flood": {"BTC-PERP": {...}}}}

``level`` is the hysteresis level of the cross part, ``margin`` and
``contagion`` the active severities as bitmasks (bit 0 = warning), each
isolated unit ``[level, active]``; a trigger is ``[symbol, price, ts]`` or
null. Flood windows and due times are processing-clock milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.alerts.flood import Cause, Deferred
from monitor.alerts.model import Trigger
from monitor.errors import StateError

VERSION = 1


def check_version(state: Mapping[str, Any]) -> None:
    if not isinstance(state, Mapping):
        raise StateError(f"alert state: expected a JSON object, got {type(state).__name__}")
    version = state.get("version")
    if version != VERSION:
        raise StateError(
            f"alert state: version {version!r} is not supported (this monitor reads {VERSION})"
        )


def cause_json(cause: Cause) -> list[Any]:
    ts, trig = cause
    return [ts, None if trig is None else [trig.symbol, trig.price, trig.ts]]


def cause_from(raw: Any) -> Cause:
    ts, trig = raw
    if trig is None:
        return int(ts), None
    symbol, price, tts = trig
    return int(ts), Trigger(
        str(symbol), None if price is None else float(price), None if tts is None else int(tts)
    )


def flood_json(window: tuple[int, int] | None, deferred: Deferred | None) -> dict[str, Any]:
    return {
        "window": None if window is None else [window[0], window[1]],
        "deferred": None
        if deferred is None
        else {
            "due": deferred.due,
            "severity": deferred.severity,
            "causes": {unit: cause_json(c) for unit, c in deferred.causes.items()},
        },
    }


def flood_from(raw: Mapping[str, Any]) -> tuple[tuple[int, int] | None, Deferred | None]:
    w = raw.get("window")
    window = None if w is None else (int(w[0]), int(w[1]))
    d = raw.get("deferred")
    deferred = None
    if d is not None:
        causes = {str(unit): cause_from(c) for unit, c in d["causes"].items()}
        deferred = Deferred(int(d["due"]), int(d["severity"]), causes)
    return window, deferred


def mask(raw: Any, where: str) -> int:
    """An active-severity bitmask (three severities: 0..7)."""
    value = int(raw)
    if not 0 <= value < 8:
        raise ValueError(f"{where}: {raw!r} is not a set of severities (0..7)")
    return value


def level(raw: Any, where: str) -> int:
    """A status level (0 healthy .. 3 liquidatable)."""
    value = int(raw)
    if not 0 <= value <= 3:
        raise ValueError(f"{where}: {raw!r} is not a level (0..3)")
    return value
