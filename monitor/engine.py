"""The one engine both drivers run: the daemon (Kafka, wall clock) and replay
(files, event-time clock).

It owns the :class:`~monitor.book.MarginBook`, the wire
:class:`~monitor.events.Decoder`, the injected :class:`~monitor.clock.Clock`,
the alert engine (optional) and the alert sinks. A driver decodes raw input
with :attr:`Engine.decoder`, hands decoded batches to :meth:`Engine.apply`
(or :meth:`Engine.process`, which also publishes the alerts), and gets back
the rejections (stale events) by their index in the batch. Nothing here knows
about Kafka.

Alerts: after each applied batch the accounts the book marked dirty are
evaluated. While a driver is catching up on history (``live = False``) the
dirty set accumulates instead (it is bounded by the number of accounts) and
is evaluated once when the driver goes live, so a rebuild does not replay
old transitions as fresh alerts.

Trigger and event time of an alert are per account, never per batch: the
engine accumulates the :class:`Causes` of the batches applied since the last
evaluation (the newest price of every symbol that had a tick accepted, the
newest accepted event time of every account that had an account event) and
the alert engine picks,
for each unit, the newest tick among the symbols the unit holds (cross
positions and tick-priced collateral of the cross part; the position's symbol
for an isolated one) as its trigger; ``ts`` is the newer of that tick and the
account's own events. So an alert's id depends on the input that concerns the
account, not on which unrelated symbols shared its batch.

A driver that applies ticks to the book itself (replay's compiled runs of
ticks) says so with :meth:`Engine.note_ticks` and then calls
:meth:`Engine.evaluate` where :meth:`Engine.apply` would have evaluated: the
alert engine sees the same causes either way, so both give the same alerts.

Publishing: sinks that only enqueue (``durable = False``: MQTT) get the alerts
first, so a burst is on its way to subscribers while the durable sinks (Kafka,
files) enqueue theirs; the alerts are encoded once for all of them
(:class:`~monitor.alerts.model.AlertBatch`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from monitor.alerts.model import AlertBatch
from monitor.book.layout import A_NISO, A_STATUS
from monitor.book.store import MarginBook
from monitor.clock import Clock
from monitor.errors import MonitorError
from monitor.events.decode import Decoder, Rejection
from monitor.events.schema import Event, Tick
from monitor.instruments.model import RiskParams
from monitor.metrics.instruments import Metrics
from monitor.risk.levels import Thresholds

I64 = npt.NDArray[np.int64]


@dataclass(slots=True)
class Causes:
    """What the transitions of one evaluation can be blamed on, accumulated over
    the batches applied since the previous one: the newest tick of every symbol
    that had a tick accepted (by symbol id) and the newest accepted event time
    of every account that had an account event (by account id). Bounded by the
    numbers of symbols and accounts, however long a catch-up."""

    ticks: dict[int, Tick] = field(default_factory=dict)
    accounts: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.ticks or self.accounts)


class AlertEvaluator(Protocol):
    """What the engine needs of :class:`monitor.alerts.AlertEngine`."""

    def evaluate(
        self,
        book: MarginBook,
        slots: I64,
        trigger: Tick | None = None,
        *,
        causes: Causes | None = None,
    ) -> list[Any]: ...

    def check_stale(self, book: MarginBook, now_ms: int) -> list[Any]: ...

    def poll(self, book: MarginBook, causes: Causes | None = None) -> list[Any]: ...


class AlertSink(Protocol):
    """An alert destination (MQTT, Kafka, file): see :mod:`monitor.sinks`."""

    async def start(self) -> None: ...

    async def publish(self, alerts: Sequence[Any]) -> None: ...

    async def flush(self, timeout_s: float) -> None: ...

    async def close(self) -> None: ...


class DeliveryError(MonitorError):
    """An alert sink could not confirm delivery in time (nothing is checkpointed)."""


@dataclass(slots=True)
class Applied:
    """The outcome of one batch."""

    rejections: list[tuple[int, Rejection]] = field(default_factory=list)
    alerts: list[Any] = field(default_factory=list)
    events: int = 0
    ticks: int = 0
    seconds: float = 0.0


class Engine:
    """Book + decoder + clock + alerts, driven batch by batch."""

    def __init__(
        self,
        params: RiskParams,
        clock: Clock,
        *,
        thresholds: Thresholds | None = None,
        alerts: AlertEvaluator | None = None,
        sinks: Sequence[AlertSink] = (),
        metrics: Metrics | None = None,
        book: MarginBook | None = None,
        live: bool = True,
    ) -> None:
        self.params = params
        self.clock = clock
        self.thresholds = thresholds or Thresholds()
        self.decoder = Decoder(params)
        self.alerts = alerts
        self.sinks: list[AlertSink] = list(sinks)
        self.metrics = metrics
        self._book = book if book is not None else MarginBook(params, self.thresholds)
        self.live = live
        # causes since the last evaluation: the symbols that had a tick accepted
        # (their newest tick is the book's price and time, read when taken) and
        # the newest accepted event time per account
        self._moved = np.zeros(len(params.symbols), dtype=np.bool_)
        self._accounts: dict[str, int] = {}

    # ------------------------------------------------------------ state
    @property
    def book(self) -> MarginBook:
        return self._book

    def replace_book(self, book: MarginBook) -> None:
        """Swap in a restored or filtered book (snapshot load, partition revocation)."""
        self._book = book

    # ------------------------------------------------------------ applying
    def apply(
        self,
        events: Sequence[Event],
        ticks: Sequence[Tick] = (),
        *,
        received_ms: int | None = None,
        evaluate: bool = True,
    ) -> Applied:
        """Apply ``events`` in order (ticks among them conflated per symbol), then
        ``ticks`` (already conflated, one per symbol: the daemon's tick queue), then
        evaluate alerts when live (``evaluate=False`` leaves the accounts dirty for
        the next evaluation: a driver applying several chunks evaluates once).
        Rejections are ``(index, Rejection)`` with the ticks indexed after the events."""
        t0 = time.perf_counter()
        book = self._book
        out = Applied(events=len(events), ticks=len(ticks))
        if events:
            out.rejections = book.apply_batch(events, conflate=True)
        if ticks:
            sid = self.params.symbol_id
            base = len(events)
            for j, t in enumerate(ticks):
                r = book.apply_tick(sid[t.symbol], t.price, t.ts)
                if r is not None:
                    out.rejections.append((base + j, r))
        if self.alerts is not None:
            self._note_causes(events, ticks, out.rejections)
        if evaluate:
            out.alerts = self.evaluate()
        out.seconds = time.perf_counter() - t0
        m = self.metrics
        if m is not None:
            m.batch_size.observe(len(events) + len(ticks))
            m.apply_seconds.observe(out.seconds)
            if ticks:
                now = self.clock.now_ms()
                for t in ticks:
                    m.tick_to_evaluation.observe(max(0, now - t.ts) / 1000.0)
                    if received_ms is not None:
                        m.tick_age.observe(max(0, received_ms - t.ts) / 1000.0)
        return out

    async def process(
        self,
        events: Sequence[Event],
        ticks: Sequence[Tick] = (),
        *,
        received_ms: int | None = None,
    ) -> Applied:
        """:meth:`apply`, then hand the alerts to every sink."""
        out = self.apply(events, ticks, received_ms=received_ms)
        if out.alerts:
            await self.publish(out.alerts)
        return out

    def note_ticks(self, symbols: npt.NDArray[np.integer[Any]] | Sequence[int]) -> None:
        """Ticks of ``symbols`` (ids, repeats allowed) were applied to the book
        without :meth:`apply` (replay's compiled runs): they are causes of the next
        evaluation, as if applied through it. Only accepted ticks belong here."""
        if self.alerts is not None:
            self._moved[symbols] = True

    def evaluate(self) -> list[Any]:
        """Evaluate the accounts the book marked dirty, blamed on the causes noted
        since the last evaluation, when live (catching up, the marks wait for
        :meth:`go_live`): what :meth:`apply` does after a batch."""
        if not self.live or self.alerts is None:
            return []
        book = self._book
        slots = book.drain_dirty()
        if not slots.size:
            return []
        return self.alerts.evaluate(book, slots, causes=self._take_causes())

    def go_live(self) -> list[Any]:
        """Start alerting: evaluate every account that is dirty or not healthy, so the
        alert state matches the book (after a rebuild or a snapshot restore)."""
        self.live = True
        book = self._book
        dirty = book.drain_dirty()
        if self.alerts is None:
            return []
        n = book.n_accounts
        risky = np.flatnonzero(
            (book.acc_i[A_STATUS, :n] > 0) | (book.acc_i[A_NISO, :n] > 0)
        ).astype(np.int64)
        slots = np.union1d(dirty, risky).astype(np.int64)
        # Evaluated even when no account is risky: the alert engine also revisits
        # the accounts whose alert state it holds (restored ones that recovered).
        return self.alerts.evaluate(book, slots, causes=self._take_causes())

    def poll(self) -> list[Any]:
        """Periodic alert housekeeping (every second or so, when live): stale prices
        and firings deferred by flood control that are now due."""
        if not self.live or self.alerts is None:
            return []
        return self.alerts.poll(self._book, self._take_causes())

    # ------------------------------------------------------------ causes
    def _note_causes(
        self,
        events: Sequence[Event],
        ticks: Sequence[Tick],
        rejections: list[tuple[int, Rejection]],
    ) -> None:
        """Remember what a batch changed: the symbols that had a tick accepted and
        the newest accepted event time of each account (rejections are indexed
        over ``events`` then ``ticks``)."""
        sid = self.params.symbol_id
        moved = self._moved
        accounts = self._accounts
        rejected = {i for i, _ in rejections} if rejections else ()
        if not rejected and Tick not in set(map(type, events)):
            # account events only, all accepted (the daemon's chunks): one lean loop
            newest = accounts.get
            for ev in events:
                a, ts = ev.account, ev.ts  # type: ignore[union-attr]
                if newest(a, -1) < ts:
                    accounts[a] = ts
        else:
            for i, ev in enumerate(events):
                if i in rejected:
                    continue
                if isinstance(ev, Tick):
                    moved[sid[ev.symbol]] = True
                elif accounts.get(ev.account, -1) < ev.ts:
                    accounts[ev.account] = ev.ts
        base = len(events)
        for j, t in enumerate(ticks):
            if base + j not in rejected:
                moved[sid[t.symbol]] = True

    def _take_causes(self) -> Causes:
        """The causes noted since the last evaluation (and forget them). A symbol's
        newest accepted tick is what the book holds for it."""
        book = self._book
        symbols = self.params.symbols
        ticks = {
            s: Tick(symbols[s], float(book.sym_price[s]), int(book.sym_ts[s]))
            for s in np.flatnonzero(self._moved).tolist()
        }
        self._moved[:] = False
        accounts, self._accounts = self._accounts, {}
        return Causes(ticks, accounts)

    # ------------------------------------------------------------ sinks
    async def start(self) -> None:
        for sink in self.sinks:
            await sink.start()

    async def publish(self, alerts: Sequence[Any]) -> None:
        """Hand ``alerts`` to every sink: the enqueue-only ones first."""
        if not alerts:
            return
        batch = alerts if isinstance(alerts, AlertBatch) else AlertBatch(alerts)
        for sink in sorted(self.sinks, key=lambda s: bool(getattr(s, "durable", True))):
            await sink.publish(batch)

    async def flush(self, timeout_s: float) -> None:
        """Wait until every sink has delivered what it was given (checkpoint step 2)."""
        for sink in self.sinks:
            if not getattr(sink, "durable", True):
                continue  # a best-effort sink (MQTT) is never waited for
            try:
                await sink.flush(timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise DeliveryError(f"{type(sink).__name__}: alerts not delivered: {exc}") from exc

    async def close(self, timeout_s: float = 5.0) -> None:
        for sink in self.sinks:
            try:
                async with asyncio.timeout(timeout_s):
                    await sink.close()
            except asyncio.CancelledError:
                raise
            except Exception:
                pass


__all__ = ["AlertEvaluator", "AlertSink", "Applied", "Causes", "DeliveryError", "Engine"]
