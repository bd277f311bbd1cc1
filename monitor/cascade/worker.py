"""The market jobs' computations in a process of their own.

The liquidation map, the partial market view and the standard cascades are
pure functions of a :class:`~monitor.cascade.snapshot.BookSnapshot`. At a
million accounts they cost seconds of CPU, much of it in numpy passes that
hold the GIL: in a thread of the daemon they would slow its apply loop and
add to every tick's time to evaluation. :class:`MarketWorker` runs them in
one child process instead (a fresh interpreter running :func:`serve_fd`: no
fork of a threaded process, and nothing of the caller's ``__main__`` is run
again), one :class:`RoundJob` at a time, over a socket pair:

- the daemon sends the snapshot without its account ids (the computations
  only count accounts; results are named on the daemon's side), its arrays
  as out-of-band pickle buffers, written straight to the pipe;
- the worker answers a :class:`RoundResult` (a few KB: per-symbol
  aggregates), or the error it raised, and waits for the next job;
- the daemon exports the gauges and decides the alerts: nothing in the
  worker touches a registry, a clock or a broker.

The worker is started on the first job. One that dies (killed, out of
memory) fails the job it was running with :class:`WorkerError`; the next job
starts a new one. :meth:`MarketWorker.close` stops it (terminate, then kill).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, overload

import monitor
from monitor.cascade.config import MarketConfig
from monitor.cascade.engine import CascadeResult, run_cascades
from monitor.cascade.impact import ImpactModel
from monitor.cascade.liqmap import DEFAULT_MOVES, LiquidationMap, liquidation_map
from monitor.cascade.partial import PartialMarket, partial_market
from monitor.cascade.shocks import Scenario
from monitor.cascade.snapshot import BookSnapshot

STOP_GRACE_S = 2.0
_ONE_THREAD = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
_ENTRY = "import sys; from monitor.cascade.worker import serve_fd; serve_fd(int(sys.argv[1]))"


class WorkerError(RuntimeError):
    """A job failed in the worker (its traceback is the message) or the worker died."""


@dataclass(frozen=True, slots=True)
class PartialSpec:
    """What :func:`~monitor.cascade.partial.partial_market` is asked for."""

    moves: tuple[float, ...]
    instance: str
    partitions: tuple[int, ...]
    created_ms: int


@dataclass(frozen=True, slots=True)
class CascadeSpec:
    scenarios: tuple[Scenario, ...]
    impact: ImpactModel
    max_rounds: int

    @classmethod
    def of(cls, config: MarketConfig, scenarios: Sequence[Scenario]) -> CascadeSpec:
        """The configured cascades of ``scenarios`` (``config.scenarios(params)``)."""
        return cls(tuple(scenarios), config.impact_model, config.max_rounds)


def partial_moves(config: MarketConfig) -> tuple[float, ...]:
    """The partials' grid: 1% steps to +-30%, plus the moves exported as gauges
    (so the map is a restriction of the partial's, see :func:`compute`)."""
    return tuple(sorted({*DEFAULT_MOVES, *config.map_moves}))


@dataclass(frozen=True, slots=True)
class RoundJob:
    """One round of the market job: any of the map, the partial and the cascades."""

    map_moves: tuple[float, ...] | None = None
    partial: PartialSpec | None = None
    cascades: CascadeSpec | None = None


@dataclass(frozen=True, slots=True)
class RoundResult:
    map: LiquidationMap | None
    partial: PartialMarket | None
    cascades: dict[str, CascadeResult]  # by scenario label; named by :meth:`named`
    cpu_s: float  # CPU time the worker spent on the job

    def named(self, account_ids: Sequence[str]) -> RoundResult:
        """The cascades with the snapshot's account ids back in place."""
        named = {
            k: dataclasses.replace(r, account_ids=account_ids) for k, r in self.cascades.items()
        }
        return dataclasses.replace(self, cascades=named)


def compute(snap: BookSnapshot, job: RoundJob) -> RoundResult:
    """The job's computations, in this process (what the worker runs)."""
    t0 = time.process_time()
    part = None
    if job.partial is not None:
        ps = job.partial
        part = partial_market(
            snap, ps.moves, instance=ps.instance, partitions=ps.partitions,
            created_ms=ps.created_ms,
        )  # fmt: skip
    lmap = None
    if job.map_moves is not None:
        # the partial's grid holds the map's moves (the daemon makes it so): its
        # map has the columns already
        lmap = None if part is None else part.map.restricted(job.map_moves)
        if lmap is None:
            lmap = liquidation_map(snap, job.map_moves)
    results: dict[str, CascadeResult] = {}
    if job.cascades is not None:
        cs = job.cascades
        results = run_cascades(snap, cs.scenarios, impact=cs.impact, max_rounds=cs.max_rounds)
    return RoundResult(lmap, part, results, time.process_time() - t0)


class Unnamed(Sequence[str]):
    """Stands in for a snapshot's account ids on the way to the worker: the
    computations read only how many there are."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        raise LookupError("account ids are named on the daemon's side, not in the worker")

    def __iter__(self) -> Iterator[str]:
        raise LookupError("account ids are named on the daemon's side, not in the worker")


# ------------------------------------------------------------ the wire
def _send(conn: Connection, obj: object) -> None:
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    conn.send_bytes(head)
    conn.send_bytes(len(buffers).to_bytes(4, "little"))
    for b in buffers:
        conn.send_bytes(b.raw())


def _recv(conn: Connection) -> Any:
    head = conn.recv_bytes()
    n = int.from_bytes(conn.recv_bytes(), "little")
    buffers = [conn.recv_bytes() for _ in range(n)]
    return pickle.loads(head, buffers=buffers)


def serve_fd(fd: int) -> None:
    """The worker's loop on the socket ``fd``: a job in, its result (or its
    error) out, until the daemon closes its end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when it stops
    conn = Connection(fd)
    while True:
        try:
            snap, job = _recv(conn)
        except (EOFError, OSError):
            return  # the daemon has gone
        try:
            reply: tuple[str, object] = ("ok", compute(snap, job))
        except Exception:
            reply = ("error", traceback.format_exc())
        try:
            _send(conn, reply)
        except (EOFError, OSError):
            return


class MarketWorker:
    """One worker process; :meth:`run` blocks until its answer (call it in a thread)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._closing = threading.Lock()
        self.started = 0  # how many worker processes were started (restarts included)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _start(self) -> Connection:
        ours, theirs = socket.socketpair()
        fd = theirs.fileno()
        # The worker imports this very package, wherever the daemon found it, and
        # keeps to one core (no BLAS thread pool spinning beside the daemon).
        root = str(Path(monitor.__file__).resolve().parent.parent)
        env = {**os.environ, **_ONE_THREAD, "PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p
        )}  # fmt: skip
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _ENTRY, str(fd)],
                pass_fds=(fd,), stdin=subprocess.DEVNULL, env=env,
            )  # fmt: skip
        finally:
            theirs.close()
        self._proc, self._conn = proc, Connection(ours.detach())
        self.started += 1
        return self._conn

    def run(self, snap: BookSnapshot, job: RoundJob) -> RoundResult:
        """The job on ``snap``; the cascades named with the snapshot's account ids."""
        conn = self._conn if self.alive else None
        if conn is None:
            self.close()
            conn = self._start()
        bare = dataclasses.replace(snap, account_ids=Unnamed(snap.n_accounts))
        try:
            _send(conn, (bare, job))
            status, value = _recv(conn)
        except (EOFError, OSError) as exc:
            code = None if self._proc is None else self._proc.poll()
            self.close()
            raise WorkerError(f"the market worker died (exit code {code}): {exc!r}") from exc
        if status != "ok":
            raise WorkerError(f"the market job failed in the worker:\n{value}")
        assert isinstance(value, RoundResult)
        return value.named(snap.account_ids)

    @property
    def alive(self) -> bool:
        """Running and idle: an idle worker has nothing to read, so a readable
        socket is its end closed (it died between jobs, not yet reaped)."""
        if self._proc is None or self._proc.poll() is not None or self._conn is None:
            return False
        try:
            return not self._conn.poll(0)
        except OSError:
            return False

    def close(self) -> None:
        """Stop the worker (a job it is running is abandoned: :meth:`run`, blocked
        in another thread, then raises :class:`WorkerError`)."""
        with self._closing:
            proc, conn = self._proc, self._conn
            self._proc = self._conn = None
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(STOP_GRACE_S)
            if conn is not None:
                conn.close()


__all__ = [
    "CascadeSpec",
    "MarketWorker",
    "PartialSpec",
    "RoundJob",
    "RoundResult",
    "Unnamed",
    "WorkerError",
    "compute",
    "partial_moves",
    "serve_fd",
]
