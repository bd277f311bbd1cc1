"""Pure figures of the end-to-end benches: percentiles, rates, per-tick latency.

Nothing here measures anything; it turns recorded times into the reported
figures, so the arithmetic is unit-tested apart from the brokers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Latency:
    """Summary of latency samples (milliseconds); ``n`` = 0 leaves the rest NaN."""

    n: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples_ms: Sequence[float] | F64) -> Latency:
        a = np.asarray(samples_ms, dtype=np.float64)
        if a.size == 0:
            nan = float("nan")
            return cls(0, nan, nan, nan)
        p50, p99 = np.percentile(a, [50.0, 99.0])
        return cls(int(a.size), float(p50), float(p99), float(a.max()))


def rate(count: int, seconds: float) -> float:
    """Messages per second (0 for an empty or zero-length interval)."""
    return count / seconds if seconds > 0 and count > 0 else 0.0


def covered_at(offsets: I64, covers: tuple[I64, F64] | None) -> F64:
    """For each offset, the time of the first cover past it, NaN where none is.

    ``covers`` = (next offset covered, time) of every cover (an evaluation, a
    fetch) of one partition, in the order they happened. Covered offsets never
    move backwards: a running maximum makes that so even if a partition was
    re-read (the first cover is what counts)."""
    out = np.full(offsets.shape, np.nan)
    if covers is None or covers[0].size == 0:
        return out
    covered = np.maximum.accumulate(covers[0])
    k = np.searchsorted(covered, offsets, side="right")
    hit = k < covered.size
    out[hit] = covers[1][k[hit]]
    return out


def tick_latencies(
    ticks: Mapping[int, tuple[I64, I64]],
    evaluations: Mapping[int, tuple[I64, F64]],
) -> tuple[F64, int]:
    """Tick-to-evaluation of every produced tick, conflated ones included.

    ``ticks[p]`` = (offsets, event times in ms) of the ticks produced on prices
    partition ``p``; ``evaluations[p]`` = (next offset covered, end time in ms)
    of every evaluation that covered records of ``p``, in the order they
    happened. A tick at offset ``o`` was evaluated by the first evaluation whose
    next offset is past ``o``: itself, or the later tick of its symbol that
    replaced it in the queue. Returns (latency of each evaluated tick in ms, how
    many ticks no evaluation covered)."""
    return between(ticks, None, evaluations)


def between(
    ticks: Mapping[int, tuple[I64, I64]],
    first: Mapping[int, tuple[I64, F64]] | None,
    then: Mapping[int, tuple[I64, F64]],
) -> tuple[F64, int]:
    """Per tick, the time of its cover in ``then`` minus that in ``first`` (its
    event time when ``first`` is None); and how many ticks lack either cover."""
    out: list[F64] = []
    missing = 0
    for p, (offsets, ts) in ticks.items():
        end = covered_at(offsets, then.get(p))
        start = ts.astype(np.float64) if first is None else covered_at(offsets, first.get(p))
        d = end - start
        ok = ~np.isnan(d)
        missing += int((~ok).sum())
        out.append(d[ok])
    return (np.concatenate(out) if out else np.zeros(0, np.float64)), missing


def first_reaching(times: Sequence[float], counts: Sequence[int], target: int) -> float | None:
    """The time of the first sample whose count is at least ``target`` (an upper
    bound on when the target was reached: at most one sampling interval late)."""
    for t, c in zip(times, counts, strict=True):
        if c >= target:
            return t
    return None


__all__ = ["Latency", "between", "covered_at", "first_reaching", "rate", "tick_latencies"]
