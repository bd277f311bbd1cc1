"""What every importer shares: its options, its output records, tick checks.

An importer reads one recording and yields, per input line, zero or more
:class:`~monitor.events.Tick`, a :class:`Skipped` (a message it recognises
and that carries no price, such as a depth update), or a
:class:`~monitor.sources.files.BadLine`. Nothing is dropped without one of
these, so the import summary accounts for every line.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from monitor.events.decode import RejectReason
from monitor.events.schema import Tick
from monitor.sources.files import BadLine

ALL = "all"
"""In ``also_spot``: emit a spot tick for every coin."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A recognised message that carries no price (counted, never an error)."""

    kind: str


@dataclass(frozen=True)
class ImportOptions:
    """Options of ``monitor import``; each format reads the ones it understands."""

    symbol: str | None = None
    """binance-csv: the symbol the file prices."""
    symbol_map: Mapping[str, str] = field(default_factory=dict)
    """Source name (stream symbol or coin, lower case; ``market:name`` also) -> symbol."""
    market: str = "auto"
    """binance-ws: spot, usdm, cm, or auto (from the file name)."""
    prices: str = "both"
    """binance-ws: which messages give prices: trade, book or both."""
    venue: str = "binance"
    """candles: the venue whose rows are imported."""
    coins: frozenset[str] | None = None
    """candles: only these coins (None: all)."""
    also_spot: frozenset[str] = frozenset()
    """Coins that also get a spot tick (symbol = the coin) at the same price."""
    interval_ms: int = 3_600_000
    """candles: the candle length."""


@dataclass
class ImportStats:
    """Counts for the one-line summary of ``monitor import``."""

    files: int = 0
    lines: int = 0
    ticks: int = 0
    outside_window: int = 0
    bad: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


Item = Tick | Skipped | BadLine
Importer = Callable[[Path, ImportOptions, ImportStats], Iterator[Item]]


def make_tick(source: str, line_no: int, symbol: str, price: float, ts: int) -> Tick | BadLine:
    """A tick, or the reason the values cannot make a valid one."""
    if not math.isfinite(price):
        return BadLine(source, line_no, RejectReason.NON_FINITE, f"price is {price} for {symbol}")
    if price <= 0.0:
        return BadLine(
            source, line_no, RejectReason.NON_POSITIVE_PRICE, f"price {price} for {symbol}"
        )
    if ts < 0:
        return BadLine(source, line_no, RejectReason.BAD_VALUE, f"ts {ts} is before 1970")
    return Tick(symbol, price, ts)


def spot_wanted(opts: ImportOptions, coin: str) -> bool:
    """Whether ``--also-spot`` asks for a spot tick of ``coin``."""
    return ALL in opts.also_spot or coin.upper() in opts.also_spot


def mapped(opts: ImportOptions, name: str, default: str, market: str = "") -> str:
    """The symbol for a source name: ``--symbol-map`` first, else ``default``."""
    key = name.lower()
    if market and f"{market}:{key}" in opts.symbol_map:
        return opts.symbol_map[f"{market}:{key}"]
    return opts.symbol_map.get(key, default)
