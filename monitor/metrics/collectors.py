"""Scrape-time collectors: figures over the whole book and the daemon's state.

They run when Prometheus scrapes (on the event loop, between batches), read
the arrays with numpy, and cost the hot path nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.book.layout import (
    A_STATUS,
    M_HWM,
    MODE_CROSS,
    P_ACCT,
    P_ENTRY,
    P_MODE,
    P_QTY,
    P_SYM,
    P_UPNL,
)
from monitor.book.store import MarginBook
from monitor.risk.levels import Status


def healthy_notional_at_risk(book: MarginBook) -> float:
    """Notional of healthy (uPnL >= 0) cross positions of accounts at or beyond WARNING."""
    hwm = int(book.meta[M_HWM])
    if hwm == 0:
        return 0.0
    pi, pf = book.pos_i[:, :hwm], book.pos_f[:, :hwm]
    acct = pi[P_ACCT]
    alive = acct >= 0
    at_risk = np.zeros(hwm, dtype=bool)
    at_risk[alive] = book.acc_i[A_STATUS, acct[alive]] >= Status.WARNING
    sel = at_risk & (pi[P_MODE] == MODE_CROSS) & (pf[P_UPNL] >= 0.0)
    if not sel.any():
        return 0.0
    marks = book.sym_price[pi[P_SYM, sel]]
    marks = np.where(np.isnan(marks), pf[P_ENTRY, sel], marks)
    return float(np.sum(np.abs(pf[P_QTY, sel]) * marks))


def symbols_in_use(book: MarginBook) -> list[int]:
    """Tick symbols that price an open position or a held collateral asset."""
    p = book.params
    out = {s for s in range(p.n_instruments) if book.sym_len[s] > 0}
    for k in range(len(p.assets)):
        s = int(p.asset_price_sym[k])
        if s >= 0 and book.hold_len[k] > 0:
            out.add(s)
    return sorted(out)


class BookCollector(Collector):
    """Accounts by status, worst margin ratio, totals, staleness per symbol in use."""

    def __init__(self, book: Callable[[], MarginBook], now_ms: Callable[[], int]) -> None:
        self._book = book
        self._now_ms = now_ms

    def collect(self) -> Iterator[Metric]:
        book = self._book()
        n = book.n_accounts
        status = book.status
        counts = np.bincount(status, minlength=4) if n else np.zeros(4, dtype=np.int64)
        g = GaugeMetricFamily("monitor_accounts", "Accounts by risk status.", labels=["status"])
        for s in Status:
            g.add_metric([s.label], float(counts[int(s)]))
        yield g
        mr = book.margin_ratio
        worst = float(np.max(mr)) if n else 0.0
        yield GaugeMetricFamily(
            "monitor_worst_margin_ratio", "Highest cross margin ratio of any account.", value=worst
        )
        yield GaugeMetricFamily(
            "monitor_total_equity",
            "Sum of the cross equity of every account.",
            value=float(np.sum(book.equity)) if n else 0.0,
        )
        yield GaugeMetricFamily(
            "monitor_total_maintenance_margin",
            "Sum of the cross maintenance margin of every account.",
            value=float(np.sum(book.maintenance_margin)) if n else 0.0,
        )
        yield GaugeMetricFamily(
            "monitor_healthy_notional_at_risk",
            "Notional of healthy positions in accounts at or beyond the warning level.",
            value=healthy_notional_at_risk(book),
        )
        yield GaugeMetricFamily(
            "monitor_book_max_correction",
            "Largest correction a resync had to make to the incremental sums.",
            value=float(book.max_correction),
        )
        st = GaugeMetricFamily(
            "monitor_price_staleness_seconds",
            "Time since the event time of the last tick, for symbols with open positions "
            "or held collateral (+Inf before the first tick).",
            labels=["symbol"],
        )
        now = self._now_ms()
        for sym in symbols_in_use(book):
            ts = int(book.sym_ts[sym])
            st.add_metric(
                [book.params.symbols[sym]], math.inf if ts < 0 else max(0.0, (now - ts) / 1000)
            )
        yield st


@dataclass(slots=True)
class DaemonStatus:
    """What the daemon reports about itself at scrape time."""

    ready: bool = False
    healthy: bool = False
    seconds_since_last_poll: float = math.inf
    snapshot_age_seconds: float = math.inf
    lag: dict[tuple[str, int], int] = field(default_factory=dict)


class StatusCollector(Collector):
    """Readiness, health, poll recency, snapshot age, consumer lag."""

    def __init__(self, status: Callable[[], DaemonStatus]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        s = self._status()
        yield GaugeMetricFamily(
            "monitor_ready", "1 once state is loaded and caught up.", value=float(s.ready)
        )
        yield GaugeMetricFamily(
            "monitor_healthy", "1 while polling and not stalled.", value=float(s.healthy)
        )
        yield GaugeMetricFamily(
            "monitor_seconds_since_last_poll",
            "Seconds since the last successful poll of the broker.",
            value=s.seconds_since_last_poll,
        )
        yield GaugeMetricFamily(
            "monitor_snapshot_age_seconds",
            "Seconds since the last durable snapshot (+Inf before the first).",
            value=s.snapshot_age_seconds,
        )
        lag = GaugeMetricFamily(
            "monitor_consumer_lag",
            "High watermark minus next offset, where the broker reports it.",
            labels=["topic", "partition"],
        )
        for (topic, part), v in sorted(s.lag.items()):
            lag.add_metric([topic, str(part)], float(v))
        yield lag
