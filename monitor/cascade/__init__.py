"""Market-level contagion: the liquidation map and the liquidation cascade.

Both work on a :class:`BookSnapshot` (copies of the book's cross positions,
balances and prices), never on the live book:

- :func:`liquidation_map`: per underlying, notional and accounts liquidatable
  at each move of a grid, from every account's exact distance to liquidation;
- :func:`run_cascade`: a shock, then rounds of forced closing and price impact
  until no account falls;
- :class:`MarketRisk`: both on the daemon's intervals, with gauges and the
  ``cascade`` alert.
"""

from monitor.cascade.config import MarketConfig
from monitor.cascade.engine import CascadeResult, CascadeRound, run_cascade
from monitor.cascade.impact import ImpactModel, price_moves
from monitor.cascade.liqmap import DEFAULT_MOVES, LiquidationMap, distances, liquidation_map
from monitor.cascade.metrics import MarketMetrics
from monitor.cascade.service import CascadeReport, MarketRisk
from monitor.cascade.shocks import Scenario, parse_scenario, parse_shock
from monitor.cascade.snapshot import BookSnapshot, take_snapshot
from monitor.cascade.watch import CascadeAlert, CascadeWatch

__all__ = [
    "DEFAULT_MOVES",
    "BookSnapshot",
    "CascadeAlert",
    "CascadeReport",
    "CascadeResult",
    "CascadeRound",
    "CascadeWatch",
    "ImpactModel",
    "LiquidationMap",
    "MarketConfig",
    "MarketMetrics",
    "MarketRisk",
    "Scenario",
    "distances",
    "liquidation_map",
    "parse_scenario",
    "parse_shock",
    "price_moves",
    "run_cascade",
    "take_snapshot",
]
