"""``monitor import``: convert real market recordings into wire-format ticks.

Exit status: 0 when every line was understood, 1 when any line was bad (each
is reported on stderr with its file and line, and counted), 2 when an input
cannot be read or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import sys

from monitor.errors import ConfigError
from monitor.importers import FORMATS
from monitor.importers.common import ALL, ImportOptions
from monitor.importers.output import write_ticks
from monitor.importers.run import import_files, summary
from monitor.sources.files import BadLine, parse_time_ms

NAME = "import"
HELP = "Convert real recordings (Binance websocket, price CSV, OHLC candles) to wire-format ticks."

# Options that only mean something for some formats: giving one elsewhere is a mistake.
_ONLY_FOR = {
    "symbol": ("binance-csv",),
    "market": ("binance-ws",),
    "prices": ("binance-ws",),
    "venue": ("candles",),
    "coins": ("candles",),
    "interval_min": ("candles",),
    "also_spot": ("binance-csv", "candles"),
}


def _time_arg(text: str) -> int:
    try:
        return parse_time_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _names(text: str) -> frozenset[str]:
    names = frozenset(n.strip().upper() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list, e.g. BTC,ETH")
    return names


def _mapping(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=SYMBOL, e.g. btcusdt=BTC-PERP")
    return key.strip().lower(), value.strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IN", help="recordings (plain, .gz or .zst)")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="input format")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output JSONL: zstd if it ends in .zst, gzip for .gz, plain otherwise; - for stdout",
    )
    parser.add_argument(
        "--from",
        dest="start",
        type=_time_arg,
        metavar="T",
        help="first event time kept (ms or ISO)",
    )
    parser.add_argument(
        "--to", dest="end", type=_time_arg, metavar="T", help="end of the window, excluded"
    )
    parser.add_argument(
        "--symbol-map",
        type=_mapping,
        action="append",
        default=[],
        metavar="NAME=SYMBOL",
        help="rename a stream symbol or coin (btcusdt=BTC-PERP, spot:btcusdt=BTC); repeatable",
    )
    parser.add_argument("--symbol", help="binance-csv: the symbol the file prices (BTC-PERP)")
    parser.add_argument(
        "--also-spot",
        type=lambda s: frozenset([ALL]) if s.strip().lower() == ALL else _names(s),
        metavar="COINS",
        help="binance-csv, candles: also emit spot ticks of these coins (BTC,ETH or all) "
        "at the contract's price, to value collateral",
    )
    parser.add_argument(
        "--market",
        choices=["auto", "spot", "usdm", "cm"],
        help="binance-ws: market of the files (default: from the file name prefix)",
    )
    parser.add_argument(
        "--prices",
        choices=["trade", "book", "both"],
        help="binance-ws: ticks from trades, book-ticker mid prices, or both (default)",
    )
    parser.add_argument("--venue", help="candles: the venue to import (default binance)")
    parser.add_argument("--coins", type=_names, metavar="COINS", help="candles: only these coins")
    parser.add_argument(
        "--interval-min", type=int, metavar="MIN", help="candles: candle length (default 60)"
    )
    parser.add_argument(
        "--max-errors",
        type=int,
        default=100,
        metavar="N",
        help="print at most N bad lines (all are counted; default 100)",
    )


def _options(args: argparse.Namespace) -> ImportOptions:
    for dest, formats in _ONLY_FOR.items():
        if getattr(args, dest) is not None and args.format not in formats:
            flag = "--" + dest.replace("_", "-")
            raise ConfigError(f"{flag} applies to --format {' or '.join(formats)} only")
    if args.interval_min is not None and args.interval_min <= 0:
        raise ConfigError("--interval-min must be positive")
    if args.start is not None and args.end is not None and args.end <= args.start:
        raise ConfigError("--to must be after --from")
    return ImportOptions(
        symbol=args.symbol,
        symbol_map=dict(args.symbol_map),
        market=args.market or "auto",
        prices=args.prices or "both",
        venue=args.venue or "binance",
        coins=args.coins,
        also_spot=args.also_spot or frozenset(),
        interval_ms=(args.interval_min or 60) * 60_000,
    )


def run(args: argparse.Namespace) -> int:
    opts = _options(args)
    shown = 0

    def report(bad: BadLine) -> None:
        nonlocal shown
        if shown < args.max_errors:
            sys.stderr.write(f"monitor import: {bad}\n")
        shown += 1

    ticks, stats = import_files(
        FORMATS[args.format],
        args.inputs,
        opts,
        start_ms=args.start,
        end_ms=args.end,
        on_bad=report,
    )
    if shown > args.max_errors:
        sys.stderr.write(
            f"monitor import: {shown - args.max_errors} more bad lines not shown (--max-errors)\n"
        )
    write_ticks(args.output, ticks)
    line = summary(stats, args.output)
    print(line, file=sys.stderr if args.output == "-" else sys.stdout)
    return 1 if stats.bad else 0
