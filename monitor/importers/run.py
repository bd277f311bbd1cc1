"""Drive one importer over several files: collect, window, sort, count.

The output is ordered by event time. Recordings are not reliably in that
order (a recorder stamps lines with its own clock), so every tick is held in
memory and sorted once; Python's sort is stable, so equal times keep file
order, then line order. Imports are offline conversions of bounded
recordings, which makes that the simple and right trade.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from pathlib import Path

from monitor.events.schema import Tick
from monitor.importers.common import Importer, ImportOptions, ImportStats, Skipped
from monitor.sources.files import BadLine


def import_files(
    importer: Importer,
    paths: Sequence[str | Path],
    opts: ImportOptions,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    on_bad: Callable[[BadLine], None] = lambda bad: None,
) -> tuple[list[Tick], ImportStats]:
    """All ticks of ``paths`` with ``start_ms <= ts < end_ms``, sorted by time.

    Every file is opened before any is read, so a missing one fails at once
    (:class:`~monitor.errors.InputError`). Bad lines go to ``on_bad`` as they
    are met and are counted.
    """
    stats = ImportStats()
    streams = [importer(Path(p), opts, stats) for p in paths]
    ticks: list[Tick] = []
    for stream in streams:
        stats.files += 1
        for item in stream:
            if isinstance(item, Tick):
                if (start_ms is not None and item.ts < start_ms) or (
                    end_ms is not None and item.ts >= end_ms
                ):
                    stats.outside_window += 1
                else:
                    ticks.append(item)
            elif isinstance(item, Skipped):
                stats.skipped[item.kind] += 1
            else:
                stats.bad += 1
                on_bad(item)
    ticks.sort(key=attrgetter("ts"))
    stats.ticks = len(ticks)
    return ticks, stats


def summary(stats: ImportStats, out: str) -> str:
    """The one-line account of an import: every input line is in one count."""
    parts = [
        f"{stats.lines:,} lines read from {stats.files} file{'s' if stats.files != 1 else ''}",
        f"{stats.ticks:,} ticks written to {out}",
    ]
    if stats.outside_window:
        parts.append(f"{stats.outside_window:,} ticks outside --from/--to")
    skipped = sum(stats.skipped.values())
    if skipped:
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.skipped.items()))
        parts.append(f"{skipped:,} known messages skipped ({kinds})")
    else:
        parts.append("0 known messages skipped")
    parts.append(f"{stats.bad:,} bad line{'s' if stats.bad != 1 else ''}")
    return "import: " + ", ".join(parts)
