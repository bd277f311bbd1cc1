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

The cross part is handled by one compiled pass over the dirty slots
(:mod:`monitor.alerts.kernels`: levels, contagion exposure, which accounts'
alerts change), the isolated positions of those accounts by another; only
units whose alerts change (or that flood control holds back) are visited one
by one in Python, with the figures the passes read, so a calm tick costs a
few compiled calls and a crash one visit per unit that moved.

Times: ``ts`` of an alert is event time, ``emitted_at`` the injected clock's
processing time; flood control and staleness run on the clock. The trigger
and ``ts`` are chosen per unit from the evaluation's
:class:`~monitor.engine.Causes`: the trigger is the newest tick among the
symbols the unit holds (cross positions and tick-priced collateral of the
cross part; the position's symbol for an isolated unit; ties by symbol name),
``ts`` the newer of that tick and the account's own events in the batch.
Without either (an account revisited on the periodic pass), a firing that
flood control held back keeps the cause it was held back with; anything else
takes the account's latest event time in the book.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from monitor.alerts import kernels as K
from monitor.alerts import state as wire_state
from monitor.alerts.attribution import attribute
from monitor.alerts.config import AlertsConfig
from monitor.alerts.flood import Cause, FloodControl
from monitor.alerts.fsm import (
    LABELS,
    Change,
    Hysteresis,
    bit,
    reconcile,
    stepper,
    top,
)
from monitor.alerts.metrics import AlertMetrics
from monitor.alerts.model import (
    KINDS,
    MARKET,
    Alert,
    Culprit,
    Kind,
    State,
    Trigger,
    Victim,
    alert_id,
    by_sub_account,
    wire_account,
)
from monitor.alerts.state import VERSION as STATE_VERSION
from monitor.alerts.state import check_version, flood_from, flood_json
from monitor.book.layout import A_MM, A_NISO, A_UPNL, A_WB, M_HWM
from monitor.book.store import MarginBook
from monitor.clock import Clock
from monitor.engine import Causes
from monitor.errors import ConfigError, StateError
from monitor.events.schema import Tick
from monitor.risk.levels import Status

I64 = npt.NDArray[np.int64]
log = structlog.get_logger("monitor.alerts")

_TOPS = tuple(top(m) for m in range(8))
_EMPTY = np.zeros(0, dtype=np.int64)
_SMALL = 256  # up to this many candidates a Python set beats np.unique
_MARGIN, _CONTAGION = 0, 1
_CROSS_KINDS: tuple[tuple[int, Kind], ...] = ((_MARGIN, "margin"), (_CONTAGION, "contagion"))
_NO_CAUSES = Causes()

# (change, highest active severity before it, its cause)
Emitted = list[tuple[Change, int, Cause]]


def _rules(cfg: AlertsConfig) -> npt.NDArray[np.float64]:
    """The level and contagion rules as :func:`~monitor.alerts.kernels.cross_pass`
    takes them (the scaled amounts computed as
    :func:`~monitor.alerts.contagion.contagion_holds` computes them)."""
    amount, share = cfg.contagion_min_notional, cfg.contagion_min_share
    stay = 1.0 - cfg.contagion_hysteresis
    out = np.zeros(K.N_RULES)
    out[K.R_ENTER : K.R_ENTER + 3] = (cfg.warning_ratio, cfg.critical_ratio, cfg.liquidatable_ratio)
    out[K.R_HYST] = cfg.hysteresis
    out[K.R_BAND] = cfg.contagion_upnl_band
    out[K.R_ANY] = float(amount <= 0.0 and share <= 0.0)
    out[K.R_AMOUNT : K.R_AMOUNT + 3] = (float(amount > 0.0), 1.0 * amount, stay * amount)
    out[K.R_SHARE : K.R_SHARE + 3] = (float(share > 0.0), 1.0 * share, stay * share)
    return out


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
        self._step = stepper(self._hyst)
        self._flood = FloodControl(round(config.min_interval_s * 1000))
        self._stale_ms = round(config.stale_price_s * 1000)
        self._metrics = AlertMetrics(registry)
        self._count = {
            (k, s): self._metrics.alerts.labels(kind=k, state=s)
            for k in KINDS
            for s in ("firing", "resolved")
        }
        # every kind's series exists from the start (a rate over a missing series is
        # no rate at all)
        self._suppressed = {k: self._metrics.suppressed.labels(kind=k) for k in KINDS}
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
        # the evaluation in progress: its causes (and their tick times by symbol id,
        # for the compiled pass, made when first needed), and the causes of the
        # deferred firings it revisits, by (account slot, unit)
        self._causes = _NO_CAUSES
        self._tick_ts: I64 | None = None
        self._due: dict[tuple[int, str], Cause] = {}
        # the rules of the compiled cross pass, and symbol ids by name order (ties
        # between triggers of one time go to the later name)
        self._rules = _rules(config)
        self._rank = _EMPTY
        K.warm_up()  # the compiled passes loaded now, not at the first alert of a crash

    # ------------------------------------------------------------ evaluation
    def evaluate(
        self,
        book: MarginBook,
        slots: Sequence[int] | I64,
        trigger: Tick | None = None,
        *,
        causes: Causes | None = None,
    ) -> list[Alert]:
        """Alerts for the accounts of ``book.drain_dirty()`` (``slots``), blamed on
        ``causes`` (what the batches since the last evaluation changed; a single
        ``trigger`` tick is shorthand for causes holding only it). Also revisits
        accounts held inside a hysteresis band and firings deferred by flood
        control that are now due."""
        self._check_book(book)
        if causes is None:
            causes = _NO_CAUSES
            if trigger is not None:
                causes = Causes({book.params.symbol_id[trigger.symbol]: trigger})
        now = self._clock.now_ms()
        self._grow(book.n_accounts)
        out: list[Alert] = []
        extra = set(self._held)
        self._causes = causes
        for key, deferred in self._flood.due(now):
            if key[0] == "a":
                extra.add(key[1])
                for unit, cause in deferred.causes.items():
                    self._due[(key[1], unit)] = cause
        try:
            cand = np.asarray(slots, dtype=np.int64)
            if extra:
                if cand.shape[0] + len(extra) <= _SMALL:  # sorted, unique: the same either way
                    cand = np.array(sorted(extra.union(cand.tolist())), dtype=np.int64)
                else:
                    more = np.fromiter(extra, np.int64, len(extra))
                    cand = np.unique(np.concatenate((cand, more)))
            if cand.shape[0]:
                self._cross(book, cand, now, out)
                iso = cand[(book.acc_i[A_NISO, cand] > 0) | self._has_iso[cand]]
                if iso.shape[0]:
                    self._isolated_pass(book, iso, now, out)
            if self._stale:
                self._stale_pass(book, now, list(self._stale), out)
        finally:
            self._causes = _NO_CAUSES
            self._tick_ts = None
            self._due.clear()
        self._finish(out)
        return out

    def evaluate_all(self, book: MarginBook) -> list[Alert]:
        """Evaluate every account (after a bulk load or a snapshot restore, whose
        accounts the book does not report as dirty)."""
        return self.evaluate(book, np.arange(book.n_accounts, dtype=np.int64))

    def poll(self, book: MarginBook, causes: Causes | None = None) -> list[Alert]:
        """Periodic housekeeping (call every second or so): the accounts at or above
        warning (their contagion exposure moves with every price although their
        level does not, and the book only reports level changes as dirty),
        deferred firings that became due, and stale prices. ``causes``: what changed
        since the last evaluation (see :meth:`evaluate`)."""
        self._check_book(book)
        at_risk = np.flatnonzero(book.status >= Status.WARNING)
        if self._iso:
            iso = np.fromiter(self._iso, np.int64, len(self._iso))
            at_risk = np.union1d(at_risk, iso)
        iso_at_risk = book.isolated_at_risk()
        if iso_at_risk.shape[0]:
            at_risk = np.union1d(at_risk, iso_at_risk)
        return self.evaluate(book, at_risk, causes=causes) + self.check_stale(
            book, self._clock.now_ms()
        )

    def check_stale(self, book: MarginBook, now_ms: int) -> list[Alert]:
        """``stale_price`` alerts: a symbol with open positions that has had no tick
        for ``stale_price_s`` of processing time fires; its next tick (or the
        last of its positions closing) resolves it."""
        self._check_book(book)
        ni = book.params.n_instruments
        self._init_seen(book, now_ms)
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
        """Count, stamp and log alerts built elsewhere (the market-level ``cascade``,
        :class:`~monitor.cascade.watch.CascadeAlert`): any object with ``id``,
        ``kind`` and ``state`` (``firing`` or ``resolved``); one offering
        ``stamped(now_ms)`` gets its ``emitted_at`` from the clock."""
        now = self._clock.now_ms()
        out = [a.stamped(now) if hasattr(a, "stamped") else a for a in alerts]
        for a in out:
            state = "resolved" if a.state == "resolved" else "firing"
            self._metrics.alerts.labels(kind=a.kind, state=state).inc()
            self._log.info(
                "alert", id=a.id, kind=a.kind, account=wire_account(a), state=a.state,
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

    # ------------------------------------------------------------ state
    def export_state(
        self, book: MarginBook, accounts: Iterable[int] | None = None
    ) -> dict[str, Any]:
        """The alert state of the accounts at slots ``accounts`` of ``book`` (None:
        every account), keyed by account id, plus the market-level state (stale
        prices), as plain JSON values (:mod:`monitor.alerts.state`).

        Per account: the hysteresis level of the cross part, the severities
        consumers were told are firing per kind, each isolated unit's level and
        firing severities, and flood control's window and deferred firings. An
        account with nothing to remember is left out. Flood windows are
        processing-clock times: after a restart on the wall clock a window that
        began before the crash still limits firings until it ends, and a firing
        it held back still goes out when due (if still owed)."""
        self._check_book(book)
        n = book.n_accounts
        self._grow(n)
        busy = set(
            np.flatnonzero(
                (self._lvl[:n] != 0) | (self._act[:, :n] != 0).any(axis=0) | self._has_iso[:n]
            ).tolist()
        )
        now = self._clock.now_ms()
        windows = {
            k: w for k, w in self._flood.windows.items() if now - w[0] < self._flood.interval_ms
        }
        deferred = self._flood.deferred
        for key in (*windows, *deferred):
            if key[0] == "a" and key[1] < n:
                busy.add(key[1])
        if accounts is not None:
            busy &= {int(a) for a in accounts}
        symbols = book.params.symbols
        out: dict[str, Any] = {}
        for a in sorted(busy):
            entry: dict[str, Any] = {
                "level": int(self._lvl[a]),
                "margin": int(self._act[_MARGIN, a]),
                "contagion": int(self._act[_CONTAGION, a]),
            }
            units = self._iso.get(a)
            if units:
                entry["isolated"] = {symbols[s]: [lv, act] for s, (lv, act) in units.items()}
            flood = {}
            for kind in ("margin", "contagion"):
                key = ("a", a, kind)
                if key in windows or key in deferred:
                    flood[kind] = flood_json(windows.get(key), deferred.get(key))
            if flood:
                entry["flood"] = flood
            out[book.account_ids[a]] = entry
        stale = {
            symbols[s]: {"active": m, "last_tick_ts": int(self._seen_ts[s])}
            for s, m in self._stale.items()
            if m
        }
        market_flood = {
            symbols[key[1]]: flood_json(windows.get(key), deferred.get(key))
            for key in {*windows, *deferred}
            if key[0] == "s"
        }
        return {
            "version": STATE_VERSION,
            "accounts": out,
            "market": {"stale": stale, "flood": market_flood},
        }

    def import_state(self, book: MarginBook, state: Mapping[str, Any]) -> None:
        """Take over state written by :meth:`export_state` (a restart), for ``book``.

        Merging: each account in ``state`` gets exactly its exported state; the
        others keep theirs. Accounts ``book`` does not hold are ignored (their
        owner alerts for them), as are isolated units and stale prices of symbols
        the instruments no longer have. Imported accounts are revisited by the
        next evaluation (:meth:`Engine.go_live <monitor.engine.Engine.go_live>`),
        which resolves what recovered meanwhile and emits nothing for what did
        not change. Raises :class:`~monitor.errors.StateError` naming the entry on
        malformed state."""
        check_version(state)
        self._check_book(book)
        self._grow(book.n_accounts)
        symbol_id = book.params.symbol_id
        accounts = state.get("accounts") or {}
        ignored = 0
        for account, entry in accounts.items():
            where = f"alert state: account {account!r}"
            a = book.slot_of(account)
            if a is None:
                ignored += 1
                continue
            try:
                lvl = wire_state.level(entry.get("level", 0), f"{where}: level")
                margin = wire_state.mask(entry.get("margin", 0), f"{where}: margin")
                contagion = wire_state.mask(entry.get("contagion", 0), f"{where}: contagion")
                units: dict[int, list[int]] = {}
                for symbol, (ulv, uact) in (entry.get("isolated") or {}).items():
                    s = symbol_id.get(symbol)
                    if s is None:
                        log.warning("alert state: unknown symbol dropped", symbol=symbol)
                        continue
                    units[s] = [
                        wire_state.level(ulv, f"{where}: {symbol}"),
                        wire_state.mask(uact, f"{where}: {symbol}"),
                    ]
                flood = {kind: flood_from(raw) for kind, raw in (entry.get("flood") or {}).items()}
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise StateError(f"{where}: malformed ({exc})") from exc
            self._forget_slot(a)
            self._lvl[a] = lvl
            self._act[_MARGIN, a] = margin
            self._act[_CONTAGION, a] = contagion
            if units:
                self._iso[a] = units
                self._has_iso[a] = True
            for kind, (window, deferred) in flood.items():
                self._flood.restore(("a", a, kind), window, deferred)
            self._held.add(a)
        self._import_market(book, state.get("market") or {})
        if ignored:
            log.info("alert state: accounts not in this book ignored", accounts=ignored)

    def forget(self, account_ids: Iterable[str]) -> None:
        """Drop every account's alert state (its partition moved to another
        instance, which alerts for it from now on)."""
        book = self._book
        if book is None:
            return
        for account in account_ids:
            a = book.slot_of(account)
            if a is not None and a < self._lvl.shape[0]:
                self._forget_slot(a)

    def _forget_slot(self, a: int) -> None:
        self._lvl[a] = 0
        self._act[:, a] = 0
        self._has_iso[a] = False
        self._iso.pop(a, None)
        self._held.discard(a)
        for kind in ("margin", "contagion"):
            self._flood.restore(("a", a, kind), None, None)

    def _import_market(self, book: MarginBook, market: Mapping[str, Any]) -> None:
        symbol_id = book.params.symbol_id
        now = self._clock.now_ms()
        try:
            stale = {
                symbol_id[sym]: (wire_state.mask(v["active"], sym), int(v["last_tick_ts"]))
                for sym, v in (market.get("stale") or {}).items()
                if sym in symbol_id
            }
            flood = {
                symbol_id[sym]: flood_from(raw)
                for sym, raw in (market.get("flood") or {}).items()
                if sym in symbol_id
            }
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise StateError(f"alert state: market: malformed ({exc})") from exc
        if stale:
            self._init_seen(book, now)
            for s, (active, last) in stale.items():
                # firing until the next tick after the one it last saw (the staleness
                # clock itself restarts: processing time did not run while down)
                self._stale[s] = active
                self._seen_ts[s] = last
                self._seen_at[s] = now
        for s, (window, deferred) in flood.items():
            self._flood.restore(("s", s), window, deferred)

    def _init_seen(self, book: MarginBook, now_ms: int) -> None:
        ni = book.params.n_instruments
        if self._seen_ts.shape[0] < ni:
            self._seen_ts = np.full(ni, -2, dtype=np.int64)
            self._seen_at = np.full(ni, now_ms, dtype=np.int64)

    # ------------------------------------------------------------ cross part
    def _cross(self, book: MarginBook, cand: I64, now: int, out: list[Alert]) -> None:
        mr, new, lc, need, band = K.cross_pass(
            cand, self._lvl, self._act, book.acc_f, book.acc_i, book.pos_f, book.pos_i,
            book.sym_price, int(book.meta[M_HWM]), book.n_accounts, self._rules,
        )  # fmt: skip
        if band.any() or self._held:
            self._held.difference_update(cand[~band].tolist())
            self._held.update(cand[band].tolist())
        if not need.shape[0]:
            return
        slots = cand[need]
        triggers = self._newest_ticks(book, slots)
        act = self._act
        actives = act[:, slots].tolist()
        levels = (new[need].tolist(), lc[need].tolist())
        ids = book.account_ids
        for i, (j, a, best) in enumerate(zip(need.tolist(), slots.tolist(), triggers, strict=True)):
            cause = self._cause(book, a, "cross", best)
            figures: tuple[float, float, float] | None = None
            attr: tuple[tuple[Culprit, ...], tuple[Victim, ...], float] | None = None
            for k, kind in _CROSS_KINDS:
                level = levels[k][i]
                active = actives[k][i]
                if _TOPS[active] == level:
                    continue
                active, emitted = self._settle(
                    ("a", a, kind), "cross", kind, active, level, now, cause
                )
                act[k, a] = active
                if not emitted:
                    continue
                if figures is None:
                    eq = float(book.acc_f[A_WB, a] + book.acc_f[A_UPNL, a])
                    figures = (float(mr[j]), eq, float(book.acc_f[A_MM, a]))
                    attr = attribute(book, a, levels[0][i])
                assert attr is not None
                for c, before, (ts, trig) in emitted:
                    out.append(
                        self._make(
                            kind, c, ids[a], "cross", before, level, ts, now, *figures, trig,
                            *attr,
                        )
                    )  # fmt: skip

    # ------------------------------------------------------------ isolated
    def _isolated_pass(self, book: MarginBook, iso: I64, now: int, out: list[Alert]) -> None:
        """The isolated units of the accounts ``iso`` (which hold isolated positions
        or alert state of some): read in one compiled pass; an account without alert
        state whose positions all stay healthy has nothing to do and is not visited."""
        start, ints, floats, rises = K.isolated_units(
            iso, book.acc_i, book.pos_f, book.pos_i, self._hyst.enter[0]
        )
        states = self._iso
        visit = [
            (j, a) for j, (a, r) in enumerate(zip(iso.tolist(), rises.tolist(), strict=True))
            if r or a in states
        ]  # fmt: skip
        if not visit:
            return
        bounds = start.tolist()
        figures = (*ints.tolist(), *floats.tolist())
        for j, a in visit:
            if self._isolated(book, a, bounds[j], bounds[j + 1], figures, now, out):
                self._held.add(a)

    def _isolated(
        self, book: MarginBook, a: int, lo: int, hi: int, figures: tuple[list[Any], ...],
        now: int, out: list[Alert],
    ) -> bool:  # fmt: skip
        """Isolated positions of account ``a`` (rows ``lo:hi`` of ``figures``, see
        :func:`~monitor.alerts.kernels.isolated_units`); True if one sits in a
        hysteresis band."""
        _, sym, raws, subs, ratios, eqs, mms, upnls = figures
        units = {sym[r]: r for r in range(lo, hi)}
        states = self._iso.get(a)
        if states is None:
            if not units:
                return False
            states = self._iso[a] = {}
        in_band = False
        step = self._step
        ticks = self._causes.ticks
        keys = sorted(units) if not states else sorted(units.keys() | states.keys())
        for s in keys:
            st = states.get(s) or [0, 0]
            r = units.get(s, -1)
            if r < 0:  # closed, or now part of the cross margin
                ratio, eq, mm, raw = 0.0, 0.0, 0.0, 0
            else:
                ratio, eq, mm, raw = ratios[r], eqs[r], mms[r], raws[r]
            level = step(st[0], ratio)
            st[0] = level
            in_band |= level > raw
            if _TOPS[st[1]] != level:
                symbol = book.params.symbols[s]
                unit = f"isolated:{symbol}"
                cause = self._cause(book, a, unit, ticks.get(s) if ticks else None)
                key = ("a", a, "margin")
                st[1], emitted = self._settle(key, unit, "margin", st[1], level, now, cause)
                culprits: tuple[Culprit, ...] = ()
                if r >= 0 and upnls[r] < 0.0:
                    culprits = (Culprit(symbol, book.sub_labels[subs[r]], upnls[r]),)
                account = book.account_ids[a]
                for c, before, (ts, trig) in emitted:
                    out.append(
                        self._make(
                            "margin", c, account, unit, before, level, ts, now, ratio, eq, mm,
                            trig, culprits, (), 0.0, isolated_symbol=symbol,
                        )
                    )  # fmt: skip
            if st[0] == 0 and st[1] == 0:
                states.pop(s, None)
            else:
                states[s] = st
        if not states:
            del self._iso[a]
        self._has_iso[a] = bool(states)
        return in_band

    # ------------------------------------------------------------ causes
    def _cause(self, book: MarginBook, a: int, unit: str, best: Tick | None) -> Cause:
        """Event time and trigger of a unit's alerts in this evaluation (see the
        module docstring), ``best`` the newest tick among the unit's symbols."""
        causes = self._causes
        ev = causes.accounts.get(book.account_ids[a]) if causes.accounts else None
        if best is None and ev is None:
            # nothing new: a firing held back keeps the cause it was held back with
            held = self._due.get((a, unit))
            for kind in ("margin", "contagion"):
                if held is not None:
                    break
                d = self._flood.deferred.get(("a", a, kind))
                held = None if d is None else d.causes.get(unit)
            if held is not None:
                return held
            return self._account_ts(book, a), None
        if best is None:
            assert ev is not None
            return ev, None
        ts = best.ts if ev is None else max(best.ts, ev)
        return ts, Trigger(best.symbol, best.price, best.ts)

    def _newest_ticks(self, book: MarginBook, slots: I64) -> list[Tick | None]:
        """Per account in ``slots``: the newest tick among the causes that moves its
        cross part (a tick of one of its cross positions' symbols or of a price of
        the collateral it holds; ties by symbol name), or None."""
        ticks = self._causes.ticks
        if not ticks:
            return [None] * slots.shape[0]
        tick_ts = self._tick_ts
        if tick_ts is None:
            tick_ts = np.full(len(book.params.symbols), K.NO_TS, dtype=np.int64)
            for s, t in ticks.items():
                tick_ts[s] = t.ts
            self._tick_ts = tick_ts
        best = K.newest_ticks(
            slots, book.acc_i, book.pos_i, book.bal, book.params.asset_price_sym, tick_ts,
            self._rank,
        )  # fmt: skip
        return [None if s < 0 else ticks[s] for s in best.tolist()]

    @staticmethod
    def _account_ts(book: MarginBook, a: int) -> int:
        """The newest event time the book holds for account ``a`` (its balances and
        open positions), else the book's."""
        ts = int(K.account_ts(a, book.acc_i, book.pos_i, book.pos_ts, book.bal_ts))
        return ts if ts >= 0 else int(book.last_event_ts)

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
            active, emitted = self._settle(
                ("s", s), "market", "stale_price", active, level, now, (at, trig)
            )
            for c, before, _ in emitted:
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
        self, key: tuple[Any, ...], unit: str, kind: Kind, active: int, level: int, now: int,
        cause: Cause,
    ) -> tuple[int, Emitted]:  # fmt: skip
        """What brings a unit's active severities to ``level``, through flood
        control: the new active set and the changes to emit, each with its cause
        (a firing held back keeps ``cause`` for when it goes out)."""
        before = _TOPS[active]
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
                    if self._flood.defer(key, unit, c.severity, cause):
                        self._suppressed[kind].inc()
                        self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
                    continue
                active |= bit(c.severity)
            else:
                active &= ~bit(c.severity)
            emitted.append((c, before, cause))
        if _TOPS[active] == level:
            self._flood.settle(key, unit)
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
            culprit_sub_accounts=by_sub_account(culprits),
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
        symbols = book.params.symbols
        rank = np.empty(len(symbols), dtype=np.int64)
        rank[sorted(range(len(symbols)), key=symbols.__getitem__)] = np.arange(len(symbols))
        self._rank = rank

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
                (("a", moved[key[1]], key[2]) if key[1] in moved else None)
                if key[0] == "a"
                else key
            )
        )
