"""What a replay keeps for its summary and its report.

Cheap on the hot path: alerts are folded in as they are emitted (counts, the
first time each account reached each level, the largest contagion events),
and the book is sampled only at event-time intervals and whenever alerts
fired (a status change): accounts by status from one compiled pass over the
accounts, healthy notional at risk from one pass over the positions. Series
are bounded: past ``max_points`` the interval doubles and every other point
is dropped. Prices are kept for every symbol (instruments and collateral).

The *worst moment* is the sample with the largest healthy notional at risk
(or, while there is none, the most accounts beyond healthy); its time, its
figures and (only when a report is wanted) a copy of the book, for the
margin-ratio distribution and the liquidation map, all come from that one
sample. The copy is taken again only when a later sample is more than 1%
worse, so the moment reported is within 1% of the worst sampled.

The *worst account* is the highest margin ratio seen (then the lowest
equity), at the samples and at every margin alert: an account reaching a
level fires one, so no level reached between samples is missed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.book.layout import M_HWM
from monitor.book.store import MarginBook
from monitor.cascade.snapshot import BookSnapshot, take_snapshot
from monitor.replay.kernels import risk_sample
from monitor.risk.levels import Status

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

LEVELS = ("warning", "critical", "liquidatable")
FIRST_REJECTIONS = 5


@dataclass(frozen=True, slots=True)
class RejectedLine:
    file: str
    line: int
    reason: str
    detail: str


@dataclass(slots=True)
class ContagionEvent:
    """A contagion alert: culprits (losing positions) dragging victims down."""

    ts: int
    account: str
    severity: str
    healthy_notional_at_risk: float
    culprits: list[dict[str, Any]]
    victims: list[dict[str, Any]]


@dataclass(slots=True)
class WorstMoment:
    ts: int
    at_risk: float
    not_healthy: int
    snapshot: BookSnapshot | None = None
    margin_ratio: F64 | None = None
    status: I64 | None = None


@dataclass(slots=True)
class Series:
    """A bounded time series: ``ts`` and one row of values per point."""

    width: int
    ts: list[int] = field(default_factory=list)
    rows: list[F64] = field(default_factory=list)

    def add(self, ts: int, row: F64) -> None:
        if self.ts and self.ts[-1] == ts:
            self.rows[-1] = row
        else:
            self.ts.append(ts)
            self.rows.append(row)

    def halve(self) -> None:
        """Drop every other point (the last one is kept)."""
        keep = list(range(len(self.ts) - 1, -1, -2))[::-1]
        self.ts = [self.ts[k] for k in keep]
        self.rows = [self.rows[k] for k in keep]

    def arrays(self) -> tuple[I64, F64]:
        ts = np.asarray(self.ts, dtype=np.int64)
        rows = np.vstack(self.rows) if self.rows else np.zeros((0, self.width))
        return ts, rows


class Recorder:
    """Summary figures and report series of one replay."""

    def __init__(
        self,
        book: MarginBook,
        *,
        sample_ms: int = 100,
        max_points: int = 4096,
        keep_worst: bool = False,
        top_events: int = 20,
    ) -> None:
        self.params = book.params
        self.sample_ms = max(1, sample_ms)
        self.max_points = max(16, max_points)
        self.keep_worst = keep_worst
        self.top_events = top_events
        self.next_sample: int | None = None
        self.status = Series(4)
        self.risk = Series(1 + len(self.params.symbols))  # at-risk notional, then each price
        self.peaks: dict[str, tuple[int, int]] = {}  # status -> (accounts, ts)
        self.rejected: Counter[str] = Counter()
        self.first_rejected: dict[str, list[RejectedLine]] = {}
        self.alerts: Counter[tuple[str, str]] = Counter()
        self.first_reached: dict[str, list[int | None]] = {}
        self.contagion: dict[str, ContagionEvent] = {}
        self.top_at_risk: tuple[float, str, int] | None = None  # (notional, account, ts)
        self.worst_account: tuple[float, float, str, int] | None = None  # (ratio, eq, acct, ts)
        self.worst: WorstMoment | None = None
        self._counts = np.zeros(4, dtype=np.int64)
        self._scratch = np.zeros(0)

    # ------------------------------------------------------------ input
    def reject(self, file: str, line: int, reason: str, detail: str) -> None:
        self.rejected[reason] += 1
        first = self.first_rejected.setdefault(reason, [])
        if len(first) < FIRST_REJECTIONS:
            first.append(RejectedLine(file, line, reason, detail))

    # ------------------------------------------------------------ alerts
    def observe(self, alerts: Sequence[Any], book: MarginBook) -> None:
        """Fold in the alerts of one evaluation; a status point is taken."""
        for a in alerts:
            kind = str(getattr(a, "kind", "?"))
            state = str(getattr(a, "state", "?"))
            self.alerts[(kind, state)] += 1
            if state != "firing":
                continue
            account = str(getattr(a, "account", ""))
            ts = int(getattr(a, "ts", 0))
            at_risk = float(getattr(a, "healthy_notional_at_risk", 0.0) or 0.0)
            if at_risk > 0.0 and (self.top_at_risk is None or at_risk > self.top_at_risk[0]):
                self.top_at_risk = (at_risk, account, ts)
            if kind == "margin" and getattr(a, "isolated_symbol", None) is None:
                self._reached(account, str(a.severity), ts)
                mr, eq = getattr(a, "margin_ratio", None), getattr(a, "equity", None)
                if mr is not None and eq is not None:
                    self._worse(float(mr), float(eq), account, ts)
            elif kind == "contagion" and at_risk > 0.0:
                held = self.contagion.get(account)
                if held is None or at_risk > held.healthy_notional_at_risk:
                    self.contagion[account] = ContagionEvent(
                        ts, account, str(a.severity), at_risk,
                        [{"symbol": c.symbol, "sub_account": c.sub_account,
                          "unrealized_pnl": c.unrealized_pnl} for c in a.culprits],
                        [{"symbol": v.symbol, "sub_account": v.sub_account,
                          "notional": v.notional} for v in a.victims],
                    )  # fmt: skip
        if alerts:
            ts = int(book.last_event_ts)
            counts = np.bincount(book.status, minlength=4).astype(np.float64)
            self._status_point(ts, counts)

    def _reached(self, account: str, severity: str, ts: int) -> None:
        if severity not in LEVELS:
            return
        row = self.first_reached.setdefault(account, [None, None, None])
        # a jump to a level passes through the ones below it at the same time
        for k in range(LEVELS.index(severity) + 1):
            if row[k] is None:
                row[k] = ts

    # ------------------------------------------------------------ samples
    def due(self, ts: int) -> bool:
        """Whether the book should be sampled before applying events at ``ts``."""
        nxt = self.next_sample
        return nxt is not None and ts >= nxt

    def sample(self, book: MarginBook, ts: int) -> None:
        """Sample the book as it stands at event time ``ts``."""
        n = book.n_accounts
        if self._scratch.shape[0] < n:
            self._scratch = np.zeros(max(n, 2 * self._scratch.shape[0]))
        total, top, top_v, worst, worst_mr, worst_eq = risk_sample(
            book.acc_f, book.acc_i, book.pos_f, book.pos_i, int(book.meta[M_HWM]), n,
            book.sym_price, self._counts, self._scratch,
        )  # fmt: skip
        counts = self._counts.astype(np.float64)
        self._status_point(ts, counts)
        row = np.empty(self.risk.width)
        row[0] = total
        row[1:] = book.sym_price
        self.risk.add(ts, row)
        if top >= 0 and (self.top_at_risk is None or top_v > self.top_at_risk[0]):
            self.top_at_risk = (top_v, book.account_ids[top], ts)
        if worst >= 0:
            self._worse(worst_mr, worst_eq, book.account_ids[worst], ts)
        self._worst_moment(book, ts, total, n - int(self._counts[0]))
        self.next_sample = (ts // self.sample_ms + 1) * self.sample_ms
        if len(self.risk.ts) > self.max_points:
            self.risk.halve()
            self.sample_ms *= 2
        if len(self.status.ts) > self.max_points:
            self.status.halve()

    def start(self, ts: int) -> None:
        """Sampling starts at event time ``ts`` (the first live event)."""
        if self.next_sample is None:
            self.next_sample = ts

    def _status_point(self, ts: int, counts: F64) -> None:
        self.status.add(ts, counts)
        for s in Status:
            v = int(counts[s])
            held = self.peaks.get(s.label)
            if held is None or v > held[0]:
                self.peaks[s.label] = (v, ts)
        if len(self.status.ts) > 2 * self.max_points:
            self.status.halve()

    def _worse(self, ratio: float, equity: float, account: str, ts: int) -> None:
        w = self.worst_account
        if w is None or ratio > w[0] or (ratio == w[0] and equity < w[1]):
            self.worst_account = (ratio, equity, account, ts)

    def _worst_moment(self, book: MarginBook, ts: int, at_risk: float, not_healthy: int) -> None:
        w = self.worst
        if w is not None:
            if at_risk > 0.0 or w.at_risk > 0.0:
                # a copy of the book is taken again only for a 1% worse moment;
                # without one, every worse sample moves the moment
                if at_risk <= w.at_risk * (1.01 if self.keep_worst else 1.0):
                    return
            elif not_healthy <= w.not_healthy:
                return
        w = WorstMoment(ts, at_risk, not_healthy)
        if self.keep_worst:
            w.snapshot = take_snapshot(book)
            w.margin_ratio = book.margin_ratio.copy()
            w.status = book.status.copy()
        self.worst = w

    # ------------------------------------------------------------ results
    def top_contagion(self) -> list[ContagionEvent]:
        events = sorted(
            self.contagion.values(), key=lambda e: (-e.healthy_notional_at_risk, e.ts, e.account)
        )
        return events[: self.top_events]

    def reached_counts(self) -> dict[str, int]:
        out = dict.fromkeys(LEVELS, 0)
        for row in self.first_reached.values():
            for k, lvl in enumerate(LEVELS):
                if row[k] is not None:
                    out[lvl] += 1
        return out


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


__all__ = ["ContagionEvent", "Recorder", "RejectedLine", "Series", "WorstMoment"]
