"""The real daemon, timed from inside, for the end-to-end benches.

:class:`ProbedDaemon` is :class:`~monitor.daemon.Daemon` with two probes and no
other change: every ``getmany`` of its two consumers that returns records
(the first such fetch starts a throughput measurement), and every next offset
it records as applied (the end of a measurement once every partition reached
its target; for prices, the end of the evaluation that covered those ticks,
in wall-clock milliseconds, for the per-tick latency).

Also here: the daemon configuration the benches use, waiting on a condition
while watching the daemon, and running a load generator in its own process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from aiokafka import TopicPartition

from monitor.bench.broker import BenchTopics
from monitor.bench.load import ProduceJob, SteadyPlan, job_json
from monitor.config import Config, build_config
from monitor.daemon import Daemon
from monitor.errors import MonitorError

T = TypeVar("T")


class BenchError(MonitorError):
    """A bench could not complete (the daemon stopped, a phase timed out)."""


class Probe:
    """Times recorded by :class:`ProbedDaemon`."""

    def __init__(self, prices_topic: str) -> None:
        self.prices_topic = prices_topic
        self.armed = False
        self.first_fetch: float | None = None  # perf_counter
        self.done_at: float | None = None  # perf_counter
        self.cpu_s = 0.0  # process CPU time (every thread) from first fetch to done
        self._pending: dict[TopicPartition, int] = {}
        self.recording = False
        self._cpu0 = 0.0
        self._evals: dict[int, tuple[list[int], list[float]]] = {}
        self._fetches: dict[int, tuple[list[int], list[float]]] = {}

    def arm(
        self, ends: Mapping[TopicPartition, int], applied: Mapping[TopicPartition, int]
    ) -> None:
        """Start a measurement: it ends once every partition in ``ends`` has been
        applied up to (not including) its offset there (``applied``: how far each
        partition is applied now)."""
        self._pending = {tp: o for tp, o in ends.items() if applied.get(tp, 0) < o}
        self.first_fetch = None
        self.done_at = None if self._pending else time.perf_counter()
        self.cpu_s = 0.0
        self.armed = True

    def fetched(self, data: Mapping[TopicPartition, Sequence[Any]]) -> None:
        if self.recording:
            now = time.time_ns() / 1e6
            for tp, recs in data.items():
                if tp.topic == self.prices_topic and recs:
                    covered, at = self._fetches.setdefault(tp.partition, ([], []))
                    covered.append(recs[-1].offset + 1)
                    at.append(now)
        if self.armed and self.first_fetch is None:
            self.first_fetch = time.perf_counter()
            self._cpu0 = time.process_time()

    def advanced(self, tp: TopicPartition, next_offset: int) -> None:
        if self.recording and tp.topic == self.prices_topic:
            covered, at = self._evals.setdefault(tp.partition, ([], []))
            covered.append(next_offset)
            at.append(time.time_ns() / 1e6)
        end = self._pending.get(tp)
        if end is not None and next_offset >= end:
            del self._pending[tp]
            if not self._pending:
                self.done_at = time.perf_counter()
                self.cpu_s = time.process_time() - self._cpu0

    def record_evaluations(self) -> None:
        self._evals.clear()
        self._fetches.clear()
        self.recording = True

    def evaluations(self) -> dict[int, tuple[Any, Any]]:
        """Prices partition -> (next offsets covered, wall ms at the end of the
        evaluation that covered them), as arrays; ends the recording."""
        self.recording = False
        return _arrays(self._evals)

    def fetches(self) -> dict[int, tuple[Any, Any]]:
        """Prices partition -> (next offsets fetched, wall ms when ``getmany``
        returned them), as arrays, over the same recording."""
        return _arrays(self._fetches)


def _arrays(d: Mapping[int, tuple[list[int], list[float]]]) -> dict[int, tuple[Any, Any]]:
    return {
        p: (np.asarray(c, dtype=np.int64), np.asarray(t, dtype=np.float64))
        for p, (c, t) in d.items()
    }


class HoldTimer(asyncio.Lock):
    """An asyncio lock that records how long each holder kept it (the stall a
    batch waiting for it sees)."""

    def __init__(self) -> None:
        super().__init__()
        self.holds: list[float] = []
        self._since = 0.0

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        self._since = time.perf_counter()
        return True

    def release(self) -> None:
        self.holds.append(time.perf_counter() - self._since)
        super().release()


def _observe_fetches(consumer: Any, probe: Probe) -> None:
    fetch = consumer.getmany

    async def getmany(*args: Any, **kwargs: Any) -> Any:
        data = await fetch(*args, **kwargs)
        if data:
            probe.fetched(data)
        return data

    consumer.getmany = getmany


class ProbedDaemon(Daemon):
    """The daemon, unchanged, reporting fetches and applied offsets to a :class:`Probe`."""

    def __init__(self, config: Config, probe: Probe, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.probe = probe

    async def _start(self) -> None:
        await super()._start()
        for feed in (self.prices, self.events):
            if feed is not None:
                _observe_fetches(feed.consumer, self.probe)

    def _advance(self, tp: TopicPartition, next_offset: int) -> None:
        super()._advance(tp, next_offset)
        self.probe.advanced(tp, next_offset)

    def arm(self, ends: Mapping[TopicPartition, int]) -> None:
        """:meth:`Probe.arm` against what this daemon has applied so far."""
        self.probe.arm(ends, self.offsets)

    async def timed_checkpoint(self) -> tuple[float, float]:
        """One checkpoint: (seconds in all, how long it held the apply lock: the
        stall the batches behind it see)."""
        timer = HoldTimer()
        async with self._apply_lock:  # the current batch is done; the next waits here
            lock, self._apply_lock = self._apply_lock, timer
            try:
                t0 = time.perf_counter()
                ok = await self.checkpoint("bench")
                total = time.perf_counter() - t0
            finally:
                self._apply_lock = lock
        if not ok or not timer.holds:
            raise BenchError("the checkpoint failed (the daemon's log says why)")
        return total, timer.holds[0]  # the first holder is the checkpoint


async def with_daemon(d: Daemon, body: Callable[[asyncio.Task[Any]], Awaitable[T]]) -> T:
    """Run ``d`` in a task group while ``body(task)`` measures, then stop it.
    Errors come out as themselves (not as an exception group)."""
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(d.run(), name="bench-daemon")
            try:
                return await body(task)
            finally:
                d.request_stop()
    except BaseExceptionGroup as eg:
        raise _first(eg) from None


def _first(eg: BaseExceptionGroup[Any]) -> BaseException:
    exc: BaseException = eg
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def daemon_config(
    bootstrap: str, topics: BenchTopics, state_dir: Path | str, **sections: dict[str, Any]
) -> Config:
    """The shipped defaults, on the bench's broker and topics, with a state
    directory of its own; checkpoints every 300 s (outside any measured phase:
    a bench times one on purpose instead) and a 30 s session timeout (the load is
    written while the daemon's loop is blocked, heartbeats included)."""
    tables: dict[str, dict[str, Any]] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": topics.group,
            "session_timeout_ms": 30_000,
        },
        "topics": topics.config(),
        "http": {"host": "127.0.0.1", "port": 0},
        "state": {"dir": str(state_dir), "snapshot_interval_s": 300.0},
        "instance": {"id": "bench"},
    }
    for name, table in sections.items():
        tables.setdefault(name, {}).update(table)
    return build_config(tables, source="<bench>", env={})


async def wait_until(
    cond: Callable[[], bool],
    timeout_s: float,
    what: str,
    task: asyncio.Task[Any] | None = None,
    step_s: float = 0.05,
) -> None:
    """Poll ``cond`` (the figures come from the probe's own times, not from here)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        if task is not None and task.done():
            raise BenchError(f"the daemon stopped while {what} (its log says why)")
        if loop.time() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s {what}")
        await asyncio.sleep(step_s)


def _command(what: str, job: ProduceJob | SteadyPlan) -> list[str]:
    return [sys.executable, "-m", "monitor.bench.load", what, job_json(job)]


def _parse(what: str, code: int, out: bytes, err: bytes) -> dict[str, Any]:
    if code != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-5:]
        raise BenchError(f"the {what} load generator failed ({code}): " + " | ".join(tail))
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def produce_blocking(job: ProduceJob) -> dict[str, Any]:
    """Generate and write a load in another process, *blocking this event loop*
    meanwhile: a daemon on this loop can neither fetch nor apply until the whole
    load is on the broker."""
    proc = subprocess.run(_command("produce", job), capture_output=True, check=False)
    return _parse("produce", proc.returncode, proc.stdout, proc.stderr)


def produce_steady_blocking(plan: SteadyPlan) -> dict[str, Any]:
    """The steady stream from another process, *blocking this event loop*."""
    proc = subprocess.run(_command("steady", plan), capture_output=True, check=False)
    return _parse("steady", proc.returncode, proc.stdout, proc.stderr)


async def run_steady(plan: SteadyPlan) -> dict[str, Any]:
    """The steady stream from another process (the loop keeps running)."""
    proc = await asyncio.create_subprocess_exec(
        *_command("steady", plan), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    return _parse("steady", proc.returncode or 0, out, err)


def counts_of(result: Mapping[str, Any], topic: str) -> dict[int, int]:
    """Messages per partition of ``topic`` in a load generator's result."""
    per: Mapping[str, int] = result.get("counts", {}).get(topic, {})
    return {int(p): int(n) for p, n in per.items()}


__all__ = [
    "BenchError",
    "Probe",
    "ProbedDaemon",
    "counts_of",
    "daemon_config",
    "produce_blocking",
    "produce_steady_blocking",
    "run_steady",
    "wait_until",
    "with_daemon",
]
