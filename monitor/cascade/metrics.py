"""Prometheus gauges of the liquidation map and the standard cascades.

Labels are bounded: ``underlying`` (from the instruments file), ``move`` (the
fixed set of configured map moves, e.g. ``"-5%"``) and ``shock`` (the
configured scenarios, e.g. ``"BTC=-10%"``). The registry is injected so tests
use a fresh one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

from monitor.cascade.config import DEFAULT_MAP_MOVES
from monitor.cascade.engine import CascadeResult
from monitor.cascade.liqmap import LiquidationMap
from monitor.cascade.shocks import move_label


class MarketMetrics:
    """Create once per registry; call :meth:`export` (or the two halves) after each
    refresh. Map moves not on ``moves`` are not exported."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        moves: Sequence[float] = DEFAULT_MAP_MOVES,
    ) -> None:
        self.moves = tuple(float(m) for m in moves)
        reg = registry if registry is not None else CollectorRegistry()
        self.registry = reg
        self.map_notional = Gauge(
            "monitor_liquidation_map_notional",
            "Cross notional liquidatable if the underlying moves by `move` (others unchanged)",
            ["underlying", "move"], registry=reg,
        )  # fmt: skip
        self.map_accounts = Gauge(
            "monitor_liquidation_map_accounts",
            "Accounts liquidatable if the underlying moves by `move` (others unchanged)",
            ["underlying", "move"], registry=reg,
        )  # fmt: skip
        self.amplification = Gauge(
            "monitor_cascade_amplification",
            "Final move / shock of the cascade a standard shock sets off (NaN for a zero shock)",
            ["shock"], registry=reg,
        )  # fmt: skip
        self.liquidated_notional = Gauge(
            "monitor_cascade_liquidated_notional",
            "Notional liquidated over all rounds of the cascade a standard shock sets off",
            ["shock"], registry=reg,
        )  # fmt: skip
        self.liquidated_accounts = Gauge(
            "monitor_cascade_liquidated_accounts",
            "Accounts liquidated over all rounds of the cascade a standard shock sets off",
            ["shock"], registry=reg,
        )  # fmt: skip
        self.bad_debt = Gauge(
            "monitor_cascade_bad_debt",
            "Negative equity left behind by the accounts a standard shock's cascade liquidates",
            ["shock"], registry=reg,
        )  # fmt: skip
        self.rounds = Gauge(
            "monitor_cascade_rounds",
            "Rounds of liquidation the cascade of a standard shock ran",
            ["shock"], registry=reg,
        )  # fmt: skip

    def export_map(self, m: LiquidationMap) -> None:
        for x in self.moves:
            hit = np.flatnonzero(np.isclose(m.moves, x, rtol=0.0, atol=1e-12))
            if hit.size == 0:
                continue
            j = int(hit[0])
            label = move_label(x)
            for u, name in enumerate(m.underlyings):
                self.map_notional.labels(name, label).set(float(m.notional[u, j]))
                self.map_accounts.labels(name, label).set(int(m.accounts[u, j]))

    def export_cascade(self, shock: str, result: CascadeResult) -> None:
        amp = result.amplification
        self.amplification.labels(shock).set(math.nan if amp is None else amp)
        self.liquidated_notional.labels(shock).set(result.notional_liquidated)
        self.liquidated_accounts.labels(shock).set(result.accounts_liquidated)
        self.bad_debt.labels(shock).set(result.bad_debt)
        self.rounds.labels(shock).set(len(result.rounds))

    def export(
        self, m: LiquidationMap | None, cascades: Mapping[str, CascadeResult] | None = None
    ) -> None:
        """A map and/or cascade results by scenario label."""
        if m is not None:
            self.export_map(m)
        for shock, result in (cascades or {}).items():
            self.export_cascade(shock, result)
