"""Import OHLC candles (``timestamp,venue,coin,o,h,l,c[,v]``) as price ticks.

This is an approximation: a candle tells the extremes of the interval, not
when they happened nor the path between them. Each candle becomes four ticks
of ``<COIN>-PERP``:

- the open at the start of the interval,
- the high and the low at +1/4 and +1/2 of the interval (+15 and +30 min for
  hourly candles), in the order that fits the candle: a down candle
  (close < open) is taken to rise to its high first and then fall to its low;
  an up or flat candle to dip to its low first and then rise to its high,
- the close at the last millisecond of the interval (+59:59.999).

So the depth of a crash (the low) is kept, but its timing inside the hour and
any intra-hour rebound are not. ``--venue`` selects the venue's rows (default
binance); rows of other venues are counted, not errors. ``--also-spot``
adds a spot tick of the coin (e.g. ``BTC``, to value BTC collateral) at the
same prices: the perp price stands in for the spot price.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from monitor.errors import InputError
from monitor.events.decode import RejectReason
from monitor.events.schema import Tick
from monitor.importers.common import (
    ImportOptions,
    ImportStats,
    Item,
    Skipped,
    make_tick,
    mapped,
    spot_wanted,
)
from monitor.sources.files import BadLine, parse_time_ms, read_lines

_REQUIRED = ("timestamp", "coin", "o", "h", "l", "c")


def candle_path(
    o: float, h: float, low: float, c: float, start_ms: int, interval_ms: int
) -> list[tuple[int, float]]:
    """The four ``(ts, price)`` points standing in for one candle (see above)."""
    first, second = (h, low) if c < o else (low, h)
    return [
        (start_ms, o),
        (start_ms + interval_ms // 4, first),
        (start_ms + interval_ms // 2, second),
        (start_ms + interval_ms - 1, c),
    ]


def read(path: Path, opts: ImportOptions, stats: ImportStats) -> Iterator[Item]:
    """Ticks from one candle file, in file order (the caller sorts by time)."""
    lines = read_lines(path)
    name = str(path)
    for n, header in lines:
        stats.lines += 1
        if header.strip():
            cols = _columns(header, name, n)
            return _read(lines, cols, name, opts, stats)
    return iter(())


def _columns(header: bytes, name: str, n: int) -> dict[str, int]:
    text = header.decode("utf-8", errors="replace").lstrip("\ufeff")
    cols = {c.strip().strip('"').lower(): i for i, c in enumerate(text.split(","))}
    missing = [c for c in _REQUIRED if c not in cols]
    if missing:
        raise InputError(
            f"{name}:{n}: not a candle file: header {text.strip()!r} lacks {', '.join(missing)}"
        )
    return cols


def _read(
    lines: Iterator[tuple[int, bytes]],
    cols: dict[str, int],
    name: str,
    opts: ImportOptions,
    stats: ImportStats,
) -> Iterator[Item]:
    width = max(cols.values()) + 1
    venue_col = cols.get("venue")
    venue = opts.venue.lower()
    for n, raw in lines:
        stats.lines += 1
        if not raw.strip():
            yield Skipped("blank line")
            continue
        fields = [f.strip().strip('"') for f in raw.decode("utf-8", errors="replace").split(",")]
        if len(fields) < width:
            yield BadLine(name, n, RejectReason.MISSING_FIELD, f"{len(fields)} fields: {raw!r}")
            continue
        if venue_col is not None and fields[venue_col].lower() != venue:
            yield Skipped("other venues")
            continue
        coin = fields[cols["coin"]].upper()
        if not coin:
            yield BadLine(name, n, RejectReason.MISSING_FIELD, "empty coin")
            continue
        if opts.coins is not None and coin not in opts.coins:
            yield Skipped("other coins")
            continue
        yield from _candle(name, n, fields, cols, coin, opts)


def _candle(
    name: str, n: int, fields: list[str], cols: dict[str, int], coin: str, opts: ImportOptions
) -> Iterator[Item]:
    try:
        start = parse_time_ms(fields[cols["timestamp"]])
    except ValueError as exc:
        yield BadLine(name, n, RejectReason.BAD_VALUE, f"timestamp: {exc}")
        return
    try:
        o, h, low, c = (float(fields[cols[k]]) for k in ("o", "h", "l", "c"))
    except ValueError:
        yield BadLine(name, n, RejectReason.BAD_TYPE, f"a price is not a number: {fields}")
        return
    if not (low <= min(o, c) and h >= max(o, c)):
        yield BadLine(
            name, n, RejectReason.BAD_VALUE, f"inconsistent candle o={o} h={h} l={low} c={c}"
        )
        return
    symbol = mapped(opts, coin, f"{coin}-PERP")
    spot = spot_wanted(opts, coin)
    ticks = [
        make_tick(name, n, symbol, price, ts)
        for ts, price in candle_path(o, h, low, c, start, opts.interval_ms)
    ]
    bad = next((t for t in ticks if isinstance(t, BadLine)), None)
    if bad is not None:
        yield bad  # one report per candle, and none of its ticks
        return
    for tick in ticks:
        yield tick
        if spot and isinstance(tick, Tick):
            yield Tick(coin, tick.price, tick.ts)
