"""The market-level jobs as the daemon runs them.

On the event loop, take a :func:`~monitor.cascade.snapshot.take_snapshot` of
the live book (array copies, so the book keeps changing safely); then
:meth:`MarketRisk.refresh_map` every ``map_interval_s`` and
:meth:`MarketRisk.run_cascades` every ``cascade_interval_s``. Both export
their gauges; the cascades return the ``cascade`` alerts to send (transitions
only). The daemon computes in the market worker
(:mod:`monitor.cascade.worker`) and hands the results to
:meth:`MarketMetrics.export_map` and :meth:`MarketRisk.record_cascades`.
Nothing here reads a clock: alerts carry the snapshot's event time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from monitor.cascade.config import MarketConfig
from monitor.cascade.engine import CascadeResult, run_cascades
from monitor.cascade.liqmap import LiquidationMap, liquidation_map
from monitor.cascade.metrics import MarketMetrics
from monitor.cascade.snapshot import BookSnapshot
from monitor.cascade.watch import CascadeAlert, CascadeWatch
from monitor.instruments.model import RiskParams


@dataclass(frozen=True, slots=True)
class CascadeReport:
    results: dict[str, CascadeResult]  # by scenario label
    alerts: list[CascadeAlert]


class MarketRisk:
    """Liquidation map and standard cascades for one book's snapshots."""

    def __init__(
        self,
        params: RiskParams,
        config: MarketConfig,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.scenarios = config.scenarios(params)  # ConfigError on a bad shock
        self.metrics = MarketMetrics(registry, moves=config.map_moves)
        self.watch = CascadeWatch(
            config.cascade_amplification_threshold, config.cascade_notional_threshold
        )

    def refresh_map(self, snap: BookSnapshot) -> LiquidationMap:
        """The map at the configured moves, exported as gauges."""
        m = liquidation_map(snap, self.config.map_moves)
        self.metrics.export_map(m)
        return m

    def run_cascades(self, snap: BookSnapshot) -> CascadeReport:
        """Every standard shock; gauges exported, alerts on threshold crossings."""
        results = run_cascades(
            snap, self.scenarios, impact=self.config.impact_model, max_rounds=self.config.max_rounds
        )
        return self.record_cascades(results, snap.ts)

    def record_cascades(self, results: Mapping[str, CascadeResult], ts: int) -> CascadeReport:
        """Export and watch cascades computed elsewhere (the market worker), as
        :meth:`run_cascades` does with its own; ``ts`` is their snapshot's."""
        alerts: list[CascadeAlert] = []
        for label, r in results.items():
            self.metrics.export_cascade(label, r)
            alert = self.watch.observe(label, r, ts)
            if alert is not None:
                alerts.append(alert)
        return CascadeReport(dict(results), alerts)
