"""Import single-symbol price CSVs (``timestamp_ms,price``), e.g. Binance
aggTrade prices sampled on a 100 ms grid.

Every row becomes a tick of ``--symbol``; with ``--also-spot`` the coin
(the symbol without ``-PERP``) gets a tick at the same price and time, so
collateral held in that coin is valued along with the contract. Any header
:func:`~monitor.sources.files.read_csv_ticks` accepts works (a ``symbol``
column, if present, wins over ``--symbol``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec

from monitor.errors import InputError
from monitor.events.decode import RejectReason
from monitor.events.schema import Tick
from monitor.importers.common import ImportOptions, ImportStats, Item, make_tick, spot_wanted
from monitor.sources.files import BadLine, Line, read_csv_ticks

_tick = msgspec.json.Decoder(Tick)


def coin_of(symbol: str) -> str:
    """``BTC-PERP`` -> ``BTC``: the coin a contract symbol is on."""
    return symbol.removesuffix("-PERP")


def read(path: Path, opts: ImportOptions, stats: ImportStats) -> Iterator[Item]:
    """Ticks from one CSV file, in file order."""
    if not opts.symbol:
        raise InputError("--format binance-csv needs --symbol (e.g. --symbol BTC-PERP)")
    return _read(read_csv_ticks(path, opts.symbol), opts, stats)


def _read(
    rows: Iterator[Line | BadLine], opts: ImportOptions, stats: ImportStats
) -> Iterator[Item]:
    last = 0
    for rec in rows:
        # Line numbers count the header and blank lines too.
        stats.lines += rec.line_no - last
        last = rec.line_no
        if isinstance(rec, BadLine):
            yield rec
            continue
        source, n, raw = rec
        try:
            t = _tick.decode(raw)
        except msgspec.ValidationError as exc:
            yield BadLine(source, n, RejectReason.BAD_VALUE, str(exc))
            continue
        tick = make_tick(source, n, t.symbol, t.price, t.ts)
        yield tick
        coin = coin_of(t.symbol)
        if isinstance(tick, Tick) and coin != t.symbol and spot_wanted(opts, coin):
            yield Tick(coin, t.price, t.ts)
