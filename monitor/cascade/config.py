"""Settings of the market-level jobs (the ``[market]`` section of the daemon
config): how often the liquidation map and the standard cascades run, which
shocks, the impact model, and the thresholds of the ``cascade`` alert.

Frozen and validated on construction; a bad value raises
:class:`~monitor.errors.ConfigError` naming ``market.<key>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from monitor.cascade.impact import ImpactModel
from monitor.cascade.shocks import Scenario, parse_scenario
from monitor.errors import ConfigError
from monitor.instruments.model import RiskParams

DEFAULT_MAP_MOVES: tuple[float, ...] = (
    -0.2, -0.1, -0.05, -0.02, -0.01, 0.01, 0.02, 0.05, 0.1, 0.2,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class MarketConfig:
    """``shocks``: one scenario per entry; an entry may join several underlyings
    with commas (``"BTC=-10%,ETH=-5%"``). ``map_moves``: the moves exported as
    liquidation-map gauges (relative, non-zero, above -100%)."""

    map_interval_s: float = 10.0
    cascade_interval_s: float = 30.0
    shocks: tuple[str, ...] = ("BTC=-10%", "ETH=-10%")
    impact: str = "linear"
    max_rounds: int = 10
    cascade_amplification_threshold: float = 1.5
    cascade_notional_threshold: float = 1e7
    map_moves: tuple[float, ...] = DEFAULT_MAP_MOVES
    # Scale-out: publish this instance's partial market view to [topics] partials
    # and merge every instance's into the group view (monitor.cascade.partial).
    partials: bool = True
    partials_max_age_s: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.partials, bool):
            raise ConfigError(f"market.partials: expected true or false, got {self.partials!r}")
        for key in ("map_interval_s", "cascade_interval_s", "cascade_amplification_threshold",
                    "cascade_notional_threshold", "partials_max_age_s"):  # fmt: skip
            v = _number(key, getattr(self, key))
            if not v > 0.0:
                raise ConfigError(f"market.{key}: must be > 0, got {v!r}")
            object.__setattr__(self, key, v)
        if isinstance(self.max_rounds, bool) or not isinstance(self.max_rounds, int):
            raise ConfigError(f"market.max_rounds: expected an integer, got {self.max_rounds!r}")
        if self.max_rounds < 1:
            raise ConfigError(f"market.max_rounds: must be >= 1, got {self.max_rounds}")
        try:
            ImpactModel.parse(self.impact)
        except ConfigError as exc:
            raise ConfigError(f"market.impact: {exc}") from None
        shocks = _sequence("shocks", self.shocks)
        if not all(isinstance(s, str) and s.strip() for s in shocks):
            raise ConfigError(f"market.shocks: expected non-empty strings, got {shocks!r}")
        object.__setattr__(self, "shocks", tuple(shocks))
        moves = tuple(_number("map_moves", m) for m in _sequence("map_moves", self.map_moves))
        for m in moves:
            if m == 0.0 or m <= -1.0:
                raise ConfigError(f"market.map_moves: {m!r} must be non-zero and above -1")
        if len(set(moves)) != len(moves):
            raise ConfigError("market.map_moves: duplicate moves")
        object.__setattr__(self, "map_moves", moves)

    @property
    def impact_model(self) -> ImpactModel:
        return ImpactModel.parse(self.impact)

    def scenarios(self, params: RiskParams) -> tuple[Scenario, ...]:
        """The standard shocks, checked against the instruments' underlyings."""
        out: list[Scenario] = []
        for text in self.shocks:
            try:
                out.append(parse_scenario(text, params))
            except ConfigError as exc:
                raise ConfigError(f"market.shocks: {exc}") from None
        return tuple(out)


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"market.{key}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"market.{key}: must be finite, got {value!r}")
    return v


def _sequence(key: str, value: Any) -> list[Any]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"market.{key}: expected a list, got {value!r}")
    return list(value)
