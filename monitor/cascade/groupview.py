"""The group view as the daemon runs it: merge the partials, run the standard
shocks on the merged curves under both bounds, export the ``monitor_group_*``
gauges.

Every instance computes the same group view from the same topic, so these
gauges are alike on every instance: aggregate them with ``max without
(instance)``, never with ``sum`` (the per-instance ``monitor_liquidation_map_*``
gauges are the ones that add up).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

from monitor.cascade.config import MarketConfig
from monitor.cascade.group import Bound, GroupCascade, group_cascade
from monitor.cascade.partial import MergedMarket, PartialMarket, merge_partials
from monitor.cascade.shocks import move_label
from monitor.instruments.model import RiskParams

BOUNDS: tuple[Bound, ...] = ("lower", "upper")


class GroupMetrics:
    def __init__(self, registry: CollectorRegistry | None, moves: Iterable[float]) -> None:
        reg = registry if registry is not None else CollectorRegistry()
        self.moves = tuple(float(m) for m in moves)
        self.map_notional = Gauge(
            "monitor_group_liquidation_map_notional",
            "Group view (all instances merged): cross notional liquidatable if the "
            "underlying moves by `move`",
            ["underlying", "move"], registry=reg,
        )  # fmt: skip
        self.map_accounts = Gauge(
            "monitor_group_liquidation_map_accounts",
            "Group view: accounts liquidatable if the underlying moves by `move`",
            ["underlying", "move"], registry=reg,
        )  # fmt: skip
        self.amplification = Gauge(
            "monitor_group_cascade_amplification",
            "Group view: final move / shock of a standard shock's cascade, under a bound",
            ["shock", "bound"], registry=reg,
        )  # fmt: skip
        self.notional = Gauge(
            "monitor_group_cascade_liquidated_notional",
            "Group view: notional a standard shock's cascade liquidates, under a bound",
            ["shock", "bound"], registry=reg,
        )  # fmt: skip
        self.accounts = Gauge(
            "monitor_group_cascade_liquidated_accounts",
            "Group view: accounts a standard shock's cascade liquidates, under a bound",
            ["shock", "bound"], registry=reg,
        )  # fmt: skip
        self.instances = Gauge(
            "monitor_group_instances", "Instances whose partial the group view merges",
            registry=reg,
        )  # fmt: skip
        self.left_out = Gauge(
            "monitor_group_partials_left_out",
            "Partials on the topic left out of the group view (stale or superseded)",
            registry=reg,
        )  # fmt: skip

    def export(self, merged: MergedMarket, cascades: dict[str, dict[Bound, GroupCascade]]) -> None:
        m = merged.map
        for x in self.moves:
            hit = np.flatnonzero(np.isclose(m.moves, x, rtol=0.0, atol=1e-12))
            if hit.size == 0:
                continue
            j = int(hit[0])
            for u, name in enumerate(m.underlyings):
                self.map_notional.labels(name, move_label(x)).set(float(m.notional[u, j]))
                self.map_accounts.labels(name, move_label(x)).set(int(m.accounts[u, j]))
        for shock, by_bound in cascades.items():
            for bound, r in by_bound.items():
                amp = r.amplification
                self.amplification.labels(shock, bound).set(math.nan if amp is None else amp)
                self.notional.labels(shock, bound).set(r.notional_liquidated)
                self.accounts.labels(shock, bound).set(r.accounts_liquidated)
        self.instances.set(len(merged.instances))
        self.left_out.set(len(merged.left_out))


@dataclass(frozen=True, slots=True)
class GroupReport:
    merged: MergedMarket
    cascades: dict[str, dict[Bound, GroupCascade]]  # scenario label -> bound -> result


class GroupView:
    """Merge, cascade, export (see the module docstring)."""

    def __init__(
        self, params: RiskParams, config: MarketConfig, registry: CollectorRegistry | None = None
    ) -> None:
        self.params = params
        self.config = config
        self.scenarios = config.scenarios(params)
        self.metrics = GroupMetrics(registry, config.map_moves)

    def refresh(self, parts: Iterable[PartialMarket], now_ms: int) -> GroupReport:
        merged = merge_partials(
            parts, now_ms=now_ms, max_age_ms=round(self.config.partials_max_age_s * 1000)
        )
        cfg = self.config
        cascades = {
            sc.label: {
                b: group_cascade(
                    merged,
                    self.params,
                    sc,
                    bound=b,
                    impact=cfg.impact_model,
                    max_rounds=cfg.max_rounds,
                )
                for b in BOUNDS
            }
            for sc in self.scenarios
        }
        self.metrics.export(merged, cascades)
        return GroupReport(merged, cascades)


__all__ = ["BOUNDS", "GroupMetrics", "GroupReport", "GroupView"]
