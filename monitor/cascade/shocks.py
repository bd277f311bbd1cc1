"""Stress scenarios: ``BTC=-10%`` (or ``BTC=-0.1``), several joined by commas.

A scenario moves every instrument and collateral asset on each named
underlying by the given relative move; the others stay where they are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from monitor.errors import ConfigError
from monitor.instruments.model import RiskParams


def move_label(move: float) -> str:
    """``-0.1`` -> ``"-10%"``, ``0.05`` -> ``"+5%"`` (used in tables and metric labels)."""
    return "0%" if move == 0.0 else f"{move * 100:+g}%"


@dataclass(frozen=True, slots=True)
class Scenario:
    """Relative moves by underlying, in the order given."""

    moves: tuple[tuple[str, float], ...]

    @property
    def label(self) -> str:
        return ",".join(f"{u}={move_label(x)}" for u, x in self.moves)

    def as_dict(self) -> dict[str, float]:
        return dict(self.moves)


def parse_shock(text: str, params: RiskParams) -> tuple[str, float]:
    """One ``UNDERLYING=MOVE`` term; MOVE is a percentage (``-10%``) or a fraction
    (``-0.1``) above -100%. Raises :class:`ConfigError` naming the bad term."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    known = params.underlyings
    if not sep or not name or not value:
        raise ConfigError(f"shock {text!r}: expected UNDERLYING=MOVE, e.g. BTC=-10%")
    if name not in known:
        folded = [u for u in known if u.lower() == name.lower()]
        if len(folded) != 1:
            raise ConfigError(
                f"shock {text!r}: unknown underlying {name!r} (known: {', '.join(known)})"
            )
        name = folded[0]
    pct = value.endswith("%")
    try:
        move = float(value[:-1] if pct else value)
    except ValueError:
        raise ConfigError(
            f"shock {text!r}: move {value!r} is not a number (write -10% or -0.1)"
        ) from None
    if pct:
        move /= 100.0
    if not math.isfinite(move) or move <= -1.0:
        hint = f" (did you mean {value}%?)" if not pct and math.isfinite(move) else ""
        raise ConfigError(f"shock {text!r}: move must be finite and above -100%{hint}")
    return name, move


def parse_scenario(terms: str | Iterable[str], params: RiskParams) -> Scenario:
    """A scenario from ``"BTC=-10%,ETH=-5%"`` or from separate terms; an
    underlying may appear once."""
    items = terms.split(",") if isinstance(terms, str) else list(terms)
    moves: list[tuple[str, float]] = []
    for term in items:
        u, x = parse_shock(term, params)
        if any(u == v for v, _ in moves):
            raise ConfigError(f"shock {term!r}: underlying {u} is shocked twice")
        moves.append((u, x))
    if not moves:
        raise ConfigError("a stress scenario needs at least one shock, e.g. BTC=-10%")
    return Scenario(tuple(moves))
