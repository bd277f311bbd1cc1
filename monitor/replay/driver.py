"""Replay: recorded files through the one :class:`~monitor.engine.Engine`.

The daemon's engine, driven by event time: a
:class:`~monitor.clock.ManualClock` is moved to the time of the events being
applied, so alert times, flood control and stale-price checks follow event
time and the same input always gives the same alerts, byte for byte. Pacing
(``--speed``) is a separate, injected clock (:mod:`monitor.replay.pacing`).

Evaluation:

- ``window_ms = 0``: every tick is applied and evaluated on its own, in
  order; consecutive account events of one time are applied together;
- ``window_ms > 0``: events are grouped by event-time window
  (``ts // window_ms``); within a window account events apply in order and
  the ticks of a symbol collapse to the latest (the daemon's conflation),
  then the window is evaluated once.

Runs of ticks the driver applies in compiled code (:mod:`monitor.replay.ticks`)
are noted as causes with :meth:`Engine.note_ticks` and evaluated with
:meth:`Engine.evaluate`, so the alert engine sees what one
:meth:`Engine.apply` per tick would have shown it: same alerts, byte for byte.

Events before ``start_ms`` (``--from``) build the state without alerting, as
the daemon does while catching up; alerting starts at the first event at or
after it. Reading stops at the first event at or after ``end_ms`` (``--to``).
Every rejected line (bad input, or stale) is counted by reason and its file
and line kept for the summary.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from monitor.alerts.config import AlertsConfig
from monitor.alerts.engine import AlertEngine
from monitor.book.store import MarginBook
from monitor.clock import Clock, ManualClock, WallClock
from monitor.engine import AlertSink, Engine
from monitor.events.decode import Decoder, Rejection, RejectReason
from monitor.events.schema import Event, Tick
from monitor.instruments.model import RiskParams
from monitor.replay.batch import I64, NO_TIME, OBJECT, TICK, Batch, concat
from monitor.replay.kernels import conflate
from monitor.replay.merge import merge_batches
from monitor.replay.pacing import Pacer
from monitor.replay.parse import TickParser
from monitor.replay.progress import ReplayProgress
from monitor.replay.reader import CHUNK_BYTES, StreamReader
from monitor.replay.recorder import Recorder
from monitor.replay.ticks import DIRTY, NO_LIMIT, STALE, TickRunner
from monitor.sources.files import BadLine


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """What to replay and how (the ``monitor replay`` arguments)."""

    files: tuple[Path, ...]
    symbol: str | None = None  # the symbol of single-symbol CSV files
    speed: float | None = None  # None: as fast as possible
    window_ms: int = 0
    start_ms: int | None = None
    end_ms: int | None = None
    sample_ms: int = 100
    poll_ms: int = 1000
    keep_worst: bool = False  # copy the book at the worst moment (for the report)
    # apply runs of ticks in compiled code (False: one Engine.apply per tick, the
    # reference path; both give the same alerts, byte for byte)
    compiled_ticks: bool = True
    prices_topic: str = "prices"  # record lines of this topic may omit ``type``
    chunk_bytes: int = CHUNK_BYTES


@dataclass(slots=True)
class ReplayStats:
    events: int = 0  # records read (blank lines excluded), rejected ones included
    ticks: int = 0
    account_events: int = 0
    warmup_events: int = 0
    evaluations: int = 0
    alerts: int = 0
    first_ts: int | None = None  # event time of the first record whose time was read
    last_ts: int | None = None
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class ReplayResult:
    files: list[str]
    stats: ReplayStats
    recorder: Recorder
    book: MarginBook
    params: RiskParams
    options: ReplayOptions
    extra: dict[str, Any] = field(default_factory=dict)


class Replay:
    """One replay run: ``await Replay(params, options, ...).run()``."""

    def __init__(
        self,
        params: RiskParams,
        options: ReplayOptions,
        *,
        alerts_config: AlertsConfig | None = None,
        sinks: Sequence[AlertSink] = (),
        pace_clock: Clock | None = None,
        progress: ReplayProgress | None = None,
        registry: CollectorRegistry | None = None,
        book: MarginBook | None = None,
    ) -> None:
        """``book``: start from this book (built with ``alerts_config.thresholds()``)
        instead of an empty one; its accounts are evaluated at the first event."""
        if options.window_ms < 0:
            raise ValueError("window_ms must be >= 0")
        if not options.files:
            raise ValueError("nothing to replay: no files")
        cfg = alerts_config if alerts_config is not None else AlertsConfig()
        self.params = params
        self.options = options
        self.clock = ManualClock(0)
        reg = registry if registry is not None else CollectorRegistry()
        self.alert_engine = AlertEngine(cfg, self.clock, reg)
        self.engine = Engine(
            params,
            self.clock,
            thresholds=cfg.thresholds(),
            alerts=self.alert_engine,
            sinks=sinks,
            book=book,
            live=options.start_ms is None and book is None,
        )
        self.pacer = Pacer(options.speed, pace_clock if pace_clock is not None else WallClock())
        self.progress = progress if progress is not None else ReplayProgress(enabled=False)
        self.recorder = Recorder(
            self.engine.book, sample_ms=options.sample_ms, keep_worst=options.keep_worst
        )
        self.stats = ReplayStats()
        self._names = [str(f) for f in options.files]
        self._symbols = params.symbols
        self._next_poll: int | None = None
        self._pending = Batch.empty()
        self._applied_ts = -1  # event time of the last event applied
        self._processed = 0  # records applied or rejected so far (the progress line)
        self._ticker = TickRunner(self.engine.book)

    # ------------------------------------------------------------ running
    async def run(self) -> ReplayResult:
        opts = self.options
        decoder = Decoder(self.params)
        parser = TickParser(self.params.symbols)
        readers = [
            StreamReader(f, i, decoder, parser, self.params.symbol_id, symbol=opts.symbol,
                         chunk_bytes=opts.chunk_bytes, prices_topic=opts.prices_topic)
            for i, f in enumerate(opts.files)
        ]  # fmt: skip
        streams = [r.batches() for r in readers]  # opens every file now: fail early
        t0 = time.perf_counter()
        await self.engine.start()
        self.progress.start()
        try:
            for batch in merge_batches(streams):
                if opts.end_ms is not None:
                    cut = int(np.searchsorted(batch.key, opts.end_ms, side="left"))
                    if cut < len(batch):
                        if cut:
                            await self._batch(batch.take(slice(0, cut)))
                        break
                await self._batch(batch)
            await self._flush()
            if not self.engine.live:
                await self._go_live(self._applied_ts)
            await self._poll(self._applied_ts, force=True)
            if self._applied_ts >= 0:
                self.recorder.start(self._applied_ts)
                self.recorder.sample(self.engine.book, self._applied_ts)
        finally:
            for s in streams:
                close = getattr(s, "close", None)
                if close is not None:
                    close()  # release the files of a replay stopped by --to or an error
            self.stats.seconds = time.perf_counter() - t0
            self.progress.update(self._processed, self.stats.last_ts, self.stats.alerts,
                                 force=True)  # fmt: skip
            self.progress.stop()
            await self.engine.close()
        return ReplayResult(self._names, self.stats, self.recorder, self.engine.book,
                            self.params, opts)  # fmt: skip

    async def _batch(self, b: Batch) -> None:
        st = self.stats
        n = len(b)
        st.events += n
        st.ticks += int(np.count_nonzero(b.kind == TICK))
        timed = b.key[b.key != NO_TIME]  # lines whose time could not be read have none
        if timed.shape[0]:
            if st.first_ts is None:
                st.first_ts = int(timed[0])
            st.last_ts = int(timed[-1])
        start = self.options.start_ms
        if self.engine.live:
            if timed.shape[0]:
                self.recorder.start(int(timed[0]))
        elif start is None:
            await self._go_live(int(b.key[0]))  # a book given: evaluate it first
        else:
            cut = int(np.searchsorted(b.key, start, side="left"))
            if cut:
                st.warmup_events += cut
                self._apply_rows(b.take(slice(0, cut)))
                self._processed += cut
            if cut == n:
                return
            await self._go_live(int(b.key[cut]))
            b = b.take(slice(cut, n))
        if self.options.window_ms:
            await self._windows(b)
        else:
            await self._one_by_one(b)
        self.progress.update(self._processed, st.last_ts, st.alerts)

    async def _flush(self) -> None:
        if len(self._pending):
            b, self._pending = self._pending, Batch.empty()
            await self._window(b)

    async def _go_live(self, ts: int) -> None:
        """Start alerting at event time ``ts``: the first live event, or ``--from``
        when nothing came after it, as the daemon goes live once caught up. The
        alerts of the state built so far are emitted then (``emitted_at``) but
        blamed, as any alert, on what the warm-up applied that concerns each
        account (:meth:`Engine.go_live`): their ``ts`` and trigger are those of
        the newest tick of its symbols, or its own newest event, before ``ts``."""
        start = self.options.start_ms
        if start is not None and ts < start:
            ts = start
        self.clock.set(max(ts, 0))
        alerts = self.engine.go_live()
        self.recorder.start(ts)
        await self._emit(alerts)

    # ------------------------------------------------------------ one by one
    async def _one_by_one(self, b: Batch) -> None:
        kind = b.kind.tolist()
        ts = b.ts.tolist()
        objs = b.objs
        obj_rows = np.flatnonzero(b.kind == OBJECT).tolist()
        obj_rows.append(len(kind))
        q = 0  # next object row, in obj_rows
        k = 0  # next object, in objs
        i = 0
        n = len(kind)
        while i < n:
            if i < obj_rows[q]:
                await self._ticks(b, i, obj_rows[q])
                i = obj_rows[q]
                continue
            t = ts[i]
            obj = objs[k]
            if isinstance(obj, Rejection | BadLine):
                self._reject_row(b, i, obj)
                self._processed += 1
                k += 1
                q += 1
                i += 1
                continue
            # consecutive account events of one time: applied, then evaluated, together
            j = i + 1
            kk = k + 1
            while (
                j < n and kind[j] == OBJECT and ts[j] == t
                and not isinstance(objs[kk], Rejection | BadLine)
            ):  # fmt: skip
                j += 1
                kk += 1
            await self._before(t)
            self.clock.set(t)
            rows = list(range(i, j))
            events: list[Event] = [objs[x] for x in range(k, kk)]  # type: ignore[misc]
            out = self.engine.apply(events)
            self._ticker.invalidate()
            self.stats.evaluations += 1
            self.stats.account_events += len(events)
            self._processed += len(events)
            if t > self._applied_ts:
                self._applied_ts = t
            for idx, r in out.rejections:
                self._reject_row(b, rows[idx], r)
            if out.alerts:
                await self._emit(out.alerts)
            q += kk - k
            i, k = j, kk

    async def _ticks(self, b: Batch, lo: int, hi: int) -> None:
        """Rows ``lo .. hi-1`` (all ticks), each applied and evaluated in order."""
        ts = b.ts
        progress = self.progress
        i = lo
        if not self.options.compiled_ticks:
            while i < hi:
                t = int(ts[i])
                await self._before(t)
                await self._tick(b, i)
                i += 1
                self._processed += 1
                if progress.enabled and not i & 1023 and progress.due():
                    progress.update(self._processed, t, self.stats.alerts)
            return
        ticker = self._ticker
        run_to = hi if not progress.enabled else min(hi, lo + _PROGRESS_ROWS)
        while i < hi:
            t = int(ts[i])
            await self._before(t)
            j, why, newest = ticker.run(
                b.sym, b.price, ts, i, run_to, limit=self._limit(t),
                stop_on_dirty=self.engine.live,
            )  # fmt: skip
            if why == STALE and j == i:
                await self._tick(b, i)  # the book rejects it, with its own message
                j = i + 1
            elif j > i:
                self.engine.note_ticks(b.sym[i:j])
                self.stats.evaluations += j - i
                if newest > self._applied_ts:
                    self._applied_ts = newest
                self.clock.set(newest)
                if why == DIRTY:
                    alerts = self.engine.evaluate()
                    if alerts:
                        await self._emit(alerts)
            self._processed += j - i
            i = j
            if i == run_to and i < hi:
                run_to = min(hi, i + _PROGRESS_ROWS)
                if progress.due():
                    progress.update(self._processed, t, self.stats.alerts)

    async def _tick(self, b: Batch, i: int) -> None:
        """One tick through :meth:`Engine.apply` (the reference path)."""
        t = int(b.ts[i])
        self.clock.set(t)
        tick = Tick(self._symbols[int(b.sym[i])], float(b.price[i]), t)
        out = self.engine.apply((), (tick,))
        self.stats.evaluations += 1
        if t > self._applied_ts:
            self._applied_ts = t
        if out.rejections:
            self._reject_row(b, i, out.rejections[0][1])
        if out.alerts:
            await self._emit(out.alerts)

    def _limit(self, t: int) -> int:
        """The first event time at which the driver must step in again: the next
        sample, the next poll, and with pacing the next event time to wait for."""
        lim = NO_LIMIT
        nxt = self.recorder.next_sample
        if nxt is not None and nxt < lim:
            lim = nxt
        if self._next_poll is not None and self._next_poll < lim:
            lim = self._next_poll
        if self.pacer.speed is not None and t + 1 < lim:
            lim = t + 1
        return lim

    # ------------------------------------------------------------ windows
    async def _windows(self, b: Batch) -> None:
        b = concat([self._pending, b])
        w = b.key // self.options.window_ms
        bounds = np.flatnonzero(w[1:] != w[:-1]) + 1
        # The last window may go on in the next batch: keep it for then.
        last = int(bounds[-1]) if bounds.shape[0] else 0
        self._pending = b.take(slice(last, len(b)))
        lo = 0
        for hi in [*bounds.tolist()]:
            await self._window(b.take(slice(lo, hi)))
            lo = hi

    async def _window(self, b: Batch) -> None:
        t_end = int(b.key[-1])
        await self._before(int(b.key[0]), pace_to=t_end)
        self.clock.set(t_end)
        alerts = self._apply_rows(b)
        self._processed += len(b)
        self.stats.evaluations += 1
        if t_end > self._applied_ts:
            self._applied_ts = t_end
        if alerts:
            await self._emit(alerts)

    def _apply_rows(self, b: Batch) -> list[Any]:
        """Apply rows as one conflated group (a window, or the warm-up) and
        evaluate them once; returns the alerts."""
        engine = self.engine
        symbols = self._symbols
        if not b.objs:
            book = engine.book
            keep, stale = conflate(b.sym, b.ts, book.sym_ts, len(symbols))
            for i in stale.tolist():
                s = int(b.sym[i])
                self._reject_row(b, i, Rejection(
                    _STALE, f"tick ts {int(b.ts[i])} for {symbols[s]} is older than the "
                    "last one",
                ))  # fmt: skip
            if self.options.compiled_ticks:
                return self._apply_ticks(b, keep)
            ticks = [
                Tick(symbols[s], p, t)
                for s, p, t in zip(
                    b.sym[keep].tolist(), b.price[keep].tolist(), b.ts[keep].tolist(), strict=True
                )
            ]
            out = engine.apply((), ticks)
            for idx, r in out.rejections:
                self._reject_row(b, int(keep[idx]), r)
            return out.alerts
        kind = b.kind.tolist()
        events: list[Event] = []
        rows: list[int] = []
        k = 0
        for i, kd in enumerate(kind):
            if kd == TICK:
                events.append(Tick(symbols[int(b.sym[i])], float(b.price[i]), int(b.ts[i])))
                rows.append(i)
                continue
            obj = b.objs[k]
            k += 1
            if isinstance(obj, Rejection | BadLine):
                self._reject_row(b, i, obj)
            else:
                events.append(obj)  # type: ignore[arg-type]
                rows.append(i)
                self.stats.account_events += 1
        out = engine.apply(events)
        self._ticker.invalidate()
        for idx, r in out.rejections:
            self._reject_row(b, rows[idx], r)
        return out.alerts

    def _apply_ticks(self, b: Batch, keep: I64) -> list[Any]:
        """The conflated ticks ``keep`` (rows of ``b``) in one compiled run, then
        one evaluation, as :meth:`Engine.apply` does for a list of ticks."""
        engine = self.engine
        sym, price, ts = b.sym[keep], b.price[keep], b.ts[keep]
        n = int(keep.shape[0])
        i = 0
        while i < n:
            j, why, _ = self._ticker.run(sym, price, ts, i, n, stop_on_dirty=False)
            engine.note_ticks(sym[i:j])
            if why == STALE:
                r = engine.book.apply_tick(int(sym[j]), float(price[j]), int(ts[j]))
                if r is not None:
                    self._reject_row(b, int(keep[j]), r)
                else:
                    engine.note_ticks(sym[j : j + 1])
                j += 1
            i = j
        return engine.evaluate()

    # ------------------------------------------------------------ common
    async def _before(self, t: int, pace_to: int | None = None) -> None:
        """Before applying events at ``t``: sample the book as it stands, wait
        for the pacing clock, run the periodic alert housekeeping."""
        rec = self.recorder
        if rec.due(t) and self._applied_ts >= 0:
            rec.sample(self.engine.book, self._applied_ts)
        await self.pacer.wait(t if pace_to is None else pace_to)
        await self._poll(t)

    async def _poll(self, t: int, *, force: bool = False) -> None:
        if t < 0:
            return
        nxt = self._next_poll
        if nxt is None:
            self._next_poll = t + self.options.poll_ms
            if not force:
                return
        elif t < nxt and not force:
            return
        self._next_poll = t + self.options.poll_ms
        self.clock.set(t)
        alerts = self.engine.poll()
        if alerts:
            await self._emit(alerts)

    async def _emit(self, alerts: list[Any]) -> None:
        self.stats.alerts += len(alerts)
        self.recorder.observe(alerts, self.engine.book)
        await self.engine.publish(alerts)

    def _reject_row(self, b: Batch, i: int, r: Rejection | BadLine) -> None:
        self.recorder.reject(
            self._names[int(b.stream[i])], int(b.line[i]), str(r.reason.value), r.detail
        )


_STALE = RejectReason.STALE
_PROGRESS_ROWS = 4096  # ticks per compiled run while a progress line is shown

__all__ = ["Replay", "ReplayOptions", "ReplayResult", "ReplayStats"]
