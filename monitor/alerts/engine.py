"""The alert engine: turns the book's dirty accounts into alerts.

For every unit (an account's cross part, each isolated position) it keeps the
level of the hysteresis state machine (:mod:`monitor.alerts.fsm`) and, per
kind, the set of severities consumers were told are firing. An evaluation
moves the levels, works out the contagion condition, and emits one alert per
severity that starts firing or is resolved; nothing is emitted while the
level holds, however often the account is re-evaluated.

Kinds: ``margin`` (the level), ``contagion`` (the level, while the account's
healthy notional at risk passes the configured amount or share, with
hysteresis: :mod:`monitor.alerts.contagion`), and
``stale_price`` (no tick for a symbol with open positions, in processing
time). ``cascade`` alerts are built by the market-level code and pass through
:meth:`AlertEngine.admit`.

The cross part is handled with array operations over the dirty slots; only
units whose alerts change are visited one by one, so a calm tick costs a few
vector operations and a crash costs one visit per account that moved.

Times: ``ts`` of an alert is event time (the triggering tick, else the book's
last event), ``emitted_at`` is the injected clock's processing time; flood
control and staleness run on the clock.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from monitor.alerts.attribution import (
    attribute,
    cross_exposure,
    cross_ratios,
    isolated_culprits,
    isolated_figures,
)
from monitor.alerts.config import AlertsConfig
from monitor.alerts.contagion import contagion_holds
from monitor.alerts.flood import FloodControl
from monitor.alerts.fsm import (
    LABELS,
    Change,
    Hysteresis,
    advance,
    advance_many,
    bit,
    reconcile,
    top,
)
from monitor.alerts.metrics import AlertMetrics
from monitor.alerts.model import (
    MARKET,
    Alert,
    Culprit,
    Kind,
    State,
    Trigger,
    Victim,
    alert_id,
    wire_account,
)
from monitor.book.layout import (
    A_MM,
    A_NISO,
    A_STATUS,
    A_UPNL,
    A_WB,
    MODE_CROSS,
    P_MODE,
    P_STATUS,
    P_SYM,
)
from monitor.book.store import MarginBook
from monitor.clock import Clock
from monitor.errors import ConfigError
from monitor.events.schema import Tick
from monitor.risk.levels import Status

I64 = npt.NDArray[np.int64]

_TOP = np.array([top(m) for m in range(8)], dtype=np.int8)
_EMPTY = np.zeros(0, dtype=np.int64)
_MARGIN, _CONTAGION = 0, 1
_CROSS_KINDS: tuple[tuple[int, Kind], ...] = ((_MARGIN, "margin"), (_CONTAGION, "contagion"))

Emitted = list[tuple[Change, int]]  # (change, highest active severity before it)


class AlertEngine:
    """Stateful alert rules over one :class:`MarginBook`."""

    def __init__(
        self,
        config: AlertsConfig,
        clock: Clock,
        registry: Any = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._hyst = Hysteresis(
            (config.warning_ratio, config.critical_ratio, config.liquidatable_ratio),
            config.hysteresis,
        )
        self._flood = FloodControl(round(config.min_interval_s * 1000))
        self._stale_ms = round(config.stale_price_s * 1000)
        self._metrics = AlertMetrics(registry)
        self._count = {
            (k, s): self._metrics.alerts.labels(kind=k, state=s)
            for k in ("margin", "contagion", "stale_price", "cascade")
            for s in ("firing", "resolved")
        }
        self._log = structlog.get_logger("monitor.alerts")
        # cross part, by account slot
        self._lvl = np.zeros(0, dtype=np.int8)
        self._act = np.zeros((2, 0), dtype=np.uint8)
        self._has_iso = np.zeros(0, dtype=bool)
        self._held: set[int] = set()  # slots to re-evaluate although not dirty
        # isolated positions: account slot -> symbol id -> [level, active]
        self._iso: dict[int, dict[int, list[int]]] = {}
        # stale prices, by symbol id
        self._seen_ts = np.zeros(0, dtype=np.int64)
        self._seen_at = np.zeros(0, dtype=np.int64)
        self._stale: dict[int, int] = {}  # symbol -> active mask
        self._book: MarginBook | None = None
        self._ids: list[str] = []  # account ids of that book, by slot
        self.suppressed: dict[str, int] = {}

    # ------------------------------------------------------------ evaluation
    def evaluate(
        self, book: MarginBook, slots: Sequence[int] | I64, trigger: Tick | None = None
    ) -> list[Alert]:
        """Alerts for the accounts of ``book.drain_dirty()`` (``slots``), caused by
        ``trigger`` (the tick, if one). Also revisits accounts held inside a
        hysteresis band and firings deferred by flood control that are now due."""
        self._check_book(book)
        now = self._clock.now_ms()
        ts = trigger.ts if trigger is not None else int(book.last_event_ts)
        trig = None if trigger is None else Trigger(trigger.symbol, trigger.price, trigger.ts)
        self._grow(book.n_accounts)
        out: list[Alert] = []
        extra = set(self._held)
        for key in self._flood.due(now):
            if isinstance(key, tuple) and key[0] in ("x", "i"):
                extra.add(key[1])
        cand = np.asarray(slots, dtype=np.int64)
        if extra:
            cand = np.unique(np.concatenate((cand, np.fromiter(extra, np.int64, len(extra)))))
        if cand.shape[0]:
            self._cross(book, cand, ts, now, trig, out)
            iso = cand[(book.acc_i[A_NISO, cand] > 0) | self._has_iso[cand]]
            for a in iso.tolist():
                if self._isolated(book, a, ts, now, trig, out):
                    self._held.add(a)
        if self._stale:
            self._stale_pass(book, now, list(self._stale), out)
        self._finish(out)
        return out

    def evaluate_all(self, book: MarginBook) -> list[Alert]:
        """Evaluate every account (after a bulk load or a snapshot restore, whose
        accounts the book does not report as dirty)."""
        return self.evaluate(book, np.arange(book.n_accounts, dtype=np.int64))

    def poll(self, book: MarginBook) -> list[Alert]:
        """Periodic housekeeping (call every second or so): the accounts at or above
        warning (their contagion exposure moves with every price although their
        level does not, and the book only reports level changes as dirty),
        deferred firings that became due, and stale prices."""
        self._check_book(book)
        at_risk = np.flatnonzero(book.status >= Status.WARNING)
        if self._iso:
            iso = np.fromiter(self._iso, np.int64, len(self._iso))
            at_risk = np.union1d(at_risk, iso)
        iso_at_risk = book.isolated_at_risk()
        if iso_at_risk.shape[0]:
            at_risk = np.union1d(at_risk, iso_at_risk)
        return self.evaluate(book, at_risk) + self.check_stale(book, self._clock.now_ms())

    def check_stale(self, book: MarginBook, now_ms: int) -> list[Alert]:
        """``stale_price`` alerts: a symbol with open positions that has had no tick
        for ``stale_price_s`` of processing time fires; its next tick (or the
        last of its positions closing) resolves it."""
        self._check_book(book)
        ni = book.params.n_instruments
        if self._seen_ts.shape[0] < ni:
            self._seen_ts = np.full(ni, -2, dtype=np.int64)
            self._seen_at = np.full(ni, now_ms, dtype=np.int64)
        last = book.sym_ts[:ni]
        opened = book.sym_len[:ni] > 0
        # The staleness clock restarts on every new tick and while nothing is open.
        fresh = (last != self._seen_ts) | ~opened
        self._seen_ts = last.copy()
        self._seen_at[fresh] = now_ms
        stale = np.flatnonzero(opened & (now_ms - self._seen_at >= self._stale_ms))
        symbols = sorted(set(stale.tolist()) | set(self._stale))
        out: list[Alert] = []
        self._stale_pass(book, now_ms, symbols, out, stale=set(stale.tolist()))
        self._finish(out)
        return out

    def admit(self, alerts: Sequence[Any]) -> list[Any]:
        """Count and log alerts built elsewhere (the market-level ``cascade``): any
        object with ``id``, ``kind`` and ``state`` (``firing``/``breached`` or
        ``resolved``)."""
        out = list(alerts)
        for a in out:
            state = "resolved" if a.state == "resolved" else "firing"
            self._metrics.alerts.labels(kind=a.kind, state=state).inc()
            self._log.info(
                "alert", id=getattr(a, "id", None) or getattr(a, "alert_id", None),
                kind=a.kind, account=wire_account(a), state=a.state,
                severity=getattr(a, "severity", None),
            )  # fmt: skip
        return out

    def summary(self, book: MarginBook) -> dict[str, Any]:
        """Counts by status (alert levels of the cross parts, hysteresis applied),
        isolated units by level, and what is firing; the retained MQTT summary."""
        self._check_book(book)
        n = book.n_accounts
        self._grow(n)
        lv = np.bincount(self._lvl[:n], minlength=4)
        iso = [0, 0, 0, 0]
        iso_firing = 0
        for units in self._iso.values():
            for level, active in units.values():
                iso[level] += 1
                iso_firing += active != 0
        iso[0] = int(book.acc_i[A_NISO, :n].sum()) - sum(iso[1:])
        return {
            "ts": self._clock.now_ms(),
            "event_ts": int(book.last_event_ts),
            "accounts": n,
            "by_status": {s.label: int(lv[s]) for s in Status},
            "isolated_by_status": {s.label: int(max(iso[s], 0)) for s in Status},
            "firing": {
                "margin": int(np.count_nonzero(self._act[_MARGIN, :n])) + iso_firing,
                "contagion": int(np.count_nonzero(self._act[_CONTAGION, :n])),
                "stale_price": sum(1 for m in self._stale.values() if m),
            },
            "deferred": self._flood.pending,
        }

    # ------------------------------------------------------------ cross part
    def _cross(
        self, book: MarginBook, cand: I64, ts: int, now: int, trig: Trigger | None,
        out: list[Alert],
    ) -> None:  # fmt: skip
        cfg = self.config
        mr = cross_ratios(book, cand)
        new = advance_many(self._lvl[cand], mr, self._hyst)
        self._lvl[cand] = new
        lc = np.zeros_like(new)
        at = np.flatnonzero(new >= Status.WARNING)
        if at.shape[0]:
            healthy, near, total = cross_exposure(book, cand[at], cfg.contagion_upnl_band)
            firing = self._act[_CONTAGION, cand[at]] != 0
            ok = contagion_holds(healthy, near, total, firing, cfg)
            lc[at] = np.where(ok, new[at], 0)
        am = self._act[_MARGIN, cand]
        ac = self._act[_CONTAGION, cand]
        need = np.flatnonzero((_TOP[am] != new) | (_TOP[ac] != lc))
        band = new > book.acc_i[A_STATUS, cand]
        if band.any() or self._held:
            self._held.difference_update(cand[~band].tolist())
            self._held.update(cand[band].tolist())
        for j in need.tolist():
            a = int(cand[j])
            levels = (int(new[j]), int(lc[j]))
            account = book.account_ids[a]
            eq = float(book.acc_f[A_WB, a] + book.acc_f[A_UPNL, a])
            mm = float(book.acc_f[A_MM, a])
            ratio = float(mr[j])
            attr: tuple[tuple[Culprit, ...], tuple[Victim, ...], float] | None = None
            for k, kind in _CROSS_KINDS:
                level = levels[k]
                active = int(self._act[k, a])
                if _TOP[active] == level:
                    continue
                active, emitted = self._settle(("x", a, kind), kind, active, level, now)
                self._act[k, a] = active
                if emitted and attr is None:
                    attr = attribute(book, a, levels[0])
                for c, before in emitted:
                    assert attr is not None
                    out.append(
                        self._make(
                            kind, c, account, "cross", before, level, ts, now, ratio, eq, mm,
                            trig, *attr,
                        )
                    )  # fmt: skip

    # ------------------------------------------------------------ isolated
    def _isolated(
        self, book: MarginBook, a: int, ts: int, now: int, trig: Trigger | None,
        out: list[Alert],
    ) -> bool:  # fmt: skip
        """Isolated positions of account ``a``; True if one sits in a hysteresis band."""
        units: dict[int, int] = {}
        for p in book.positions_of(a):
            if book.pos_i[P_MODE, p] != MODE_CROSS:
                units[int(book.pos_i[P_SYM, p])] = p
        states = self._iso.get(a)
        if states is None:
            if not units:
                return False
            states = self._iso[a] = {}
        in_band = False
        account = book.account_ids[a]
        for s in sorted(set(units) | set(states)):
            st = states.get(s) or [0, 0]
            p = units.get(s, -1)
            culprits: tuple[Culprit, ...] = ()
            if p < 0:  # closed, or now part of the cross margin
                ratio, eq, mm, raw = 0.0, 0.0, 0.0, 0
            else:
                ratio, eq, mm = isolated_figures(book, p)
                raw = int(book.pos_i[P_STATUS, p])
                culprits = isolated_culprits(book, p)
            level = int(advance(Status(st[0]), ratio, self._hyst))
            st[0] = level
            in_band |= level > raw
            if top(st[1]) != level:
                symbol = book.params.symbols[s]
                st[1], emitted = self._settle(("i", a, s), "margin", st[1], level, now)
                for c, before in emitted:
                    out.append(
                        self._make(
                            "margin", c, account, f"isolated:{symbol}", before, level, ts, now,
                            ratio, eq, mm, trig, culprits, (), 0.0, isolated_symbol=symbol,
                        )
                    )  # fmt: skip
            if st == [0, 0]:
                states.pop(s, None)
            else:
                states[s] = st
        if not states:
            del self._iso[a]
        self._has_iso[a] = bool(states)
        return in_band

    # ------------------------------------------------------------ stale prices
    def _stale_pass(
        self, book: MarginBook, now: int, symbols: Sequence[int], out: list[Alert],
        stale: set[int] | None = None,
    ) -> None:  # fmt: skip
        ts = int(book.last_event_ts)
        for s in symbols:
            active = self._stale.get(s, 0)
            if stale is not None:
                is_stale = s in stale
            else:  # between checks: only a new tick or closed positions resolve
                is_stale = bool(book.sym_len[s] > 0) and int(book.sym_ts[s]) == int(
                    self._seen_ts[s]
                )
            level = int(Status.WARNING) if is_stale else 0
            if top(active) == level:
                if not active:
                    self._stale.pop(s, None)
                continue
            symbol = book.params.symbols[s]
            last_ts = int(book.sym_ts[s])
            price = float(book.sym_price[s])
            trig = Trigger(symbol, price, None if last_ts < 0 else last_ts)
            # a resolution by a new tick happened at that tick; anything else at the
            # event time the book has reached
            ticked = not is_stale and last_ts >= 0 and last_ts != int(self._seen_ts[s])
            at = last_ts if ticked else ts
            active, emitted = self._settle(("s", s), "stale_price", active, level, now)
            for c, before in emitted:
                out.append(
                    self._make(
                        "stale_price", c, MARKET, f"stale:{symbol}", before, level, at, now,
                        None, None, None, trig, (), (), 0.0,
                    )
                )  # fmt: skip
            if active:
                self._stale[s] = active
            else:
                self._stale.pop(s, None)

    # ------------------------------------------------------------ common
    def _settle(
        self, key: Hashable, kind: Kind, active: int, level: int, now: int
    ) -> tuple[int, Emitted]:
        """What brings a unit's active severities to ``level``, through flood
        control: the new active set and the changes to emit."""
        before = top(active)
        _, changes = reconcile(active, level)
        # a firing that comes with a resolution is the level left standing
        replacing = len(changes) > 1 and changes[-1].firing
        emitted: Emitted = []
        for c in changes:
            if c.firing:
                if replacing:
                    # the lower level left standing when a higher one resolves
                    self._flood.record(key, c.severity, now)
                elif not self._flood.allow(key, c.severity, now):
                    if self._flood.defer(key, c.severity):
                        self._metrics.suppressed.labels(kind=kind).inc()
                        self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
                    continue
                active |= bit(c.severity)
            else:
                active &= ~bit(c.severity)
            emitted.append((c, before))
        if top(active) == level:
            self._flood.settle(key)
        return active, emitted

    def _make(
        self, kind: Kind, c: Change, account: str, unit: str, before: int, level: int,
        ts: int, now: int, ratio: float | None, eq: float | None, mm: float | None,
        trig: Trigger | None, culprits: tuple[Culprit, ...], victims: tuple[Victim, ...],
        at_risk: float, isolated_symbol: str | None = None,
    ) -> Alert:  # fmt: skip
        sev = LABELS[c.severity]
        state: State = "firing" if c.firing else "resolved"
        transition = f"{LABELS[before]}->{LABELS[level]}:{sev}:{state}"
        return Alert(
            id=alert_id(account, unit, kind, transition, ts),
            kind=kind,
            severity=sev,  # type: ignore[arg-type]
            state=state,
            account=account,
            ts=ts,
            emitted_at=now,
            margin_ratio=ratio,
            equity=eq,
            maintenance_margin=mm,
            trigger=trig,
            culprits=culprits,
            victims=victims,
            healthy_notional_at_risk=at_risk,
            isolated_symbol=isolated_symbol,
        )

    def _finish(self, out: list[Alert]) -> None:
        log = self._log
        count = self._count
        for a in out:
            count[(a.kind, a.state)].inc()
            log.info(
                "alert", id=a.id, kind=a.kind, account=a.account, state=a.state,
                severity=a.severity,
            )  # fmt: skip

    def _grow(self, n: int) -> None:
        cap = self._lvl.shape[0]
        if n <= cap:
            return
        new = max(n, 2 * cap, 1024)
        lvl = np.zeros(new, dtype=np.int8)
        lvl[:cap] = self._lvl
        act = np.zeros((2, new), dtype=np.uint8)
        act[:, :cap] = self._act
        iso = np.zeros(new, dtype=bool)
        iso[:cap] = self._has_iso
        self._lvl, self._act, self._has_iso = lvl, act, iso

    def _check_book(self, book: MarginBook) -> None:
        if book is self._book:
            return
        if book.thresholds != self.config.thresholds():
            raise ConfigError(
                f"the book's status thresholds {book.thresholds} differ from [alerts] "
                f"({self.config.thresholds()}): build the MarginBook with "
                "AlertsConfig.thresholds()"
            )
        if self._book is not None:
            self._rebind(book)
        self._book = book
        self._ids = book.account_ids

    def _rebind(self, book: MarginBook) -> None:
        """Carry the state over to a replaced book (a restore, or the accounts kept
        after a partition revocation), whose slots differ: matched by account id.
        Accounts the new book does not hold are forgotten (their new owner alerts)."""
        old_ids = self._ids
        n_old = min(len(old_ids), self._lvl.shape[0])
        busy = np.flatnonzero(
            (self._lvl[:n_old] != 0)
            | (self._act[:, :n_old] != 0).any(axis=0)
            | self._has_iso[:n_old]
        ).tolist()
        moved: dict[int, int] = {}
        for a in busy:
            b = book.slot_of(old_ids[a])
            if b is not None:
                moved[a] = b
        lvl, act, has_iso = self._lvl, self._act, self._has_iso
        self._lvl = np.zeros(0, dtype=np.int8)
        self._act = np.zeros((2, 0), dtype=np.uint8)
        self._has_iso = np.zeros(0, dtype=bool)
        self._grow(book.n_accounts)
        if moved:
            src = np.fromiter(moved.keys(), np.int64, len(moved))
            dst = np.fromiter(moved.values(), np.int64, len(moved))
            self._lvl[dst] = lvl[src]
            self._act[:, dst] = act[:, src]
            self._has_iso[dst] = has_iso[src]
        self._iso = {moved[a]: units for a, units in self._iso.items() if a in moved}
        self._held = {moved[a] for a in self._held if a in moved}
        self._flood.rekey(
            lambda key: (
                ((key[0], moved[key[1]], *key[2:]) if key[1] in moved else None)
                if key[0] in ("x", "i")
                else key
            )
        )
