"""``monitor stress BOOK (--map | --shock U=X% ...)``: market-level stress of an
event file: the liquidation map, or the cascade a shock sets off."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from monitor.cascade.engine import run_cascade
from monitor.cascade.impact import ImpactModel
from monitor.cascade.liqmap import liquidation_map
from monitor.cascade.render import format_cascade, format_map
from monitor.cascade.shocks import parse_scenario
from monitor.cascade.snapshot import take_snapshot
from monitor.cli.commands.evaluate import add_prices_topic, load_book
from monitor.errors import ConfigError
from monitor.instruments import load_instruments

NAME = "stress"
HELP = (
    "Stress an event file: its liquidation map (--map) or the liquidation cascade a "
    "shock sets off (--shock)."
)
_EPILOG = """\
The book is the final state of the event file (JSONL, plain, .gz or .zst).
A shock moves every instrument and collateral asset on an underlying:
--shock BTC=-10% (or BTC=-0.1); repeat --shock for several underlyings.
Impact: after each round a price is the shocked price moved by
dp/p = -sold/depth_usd (linear) or -impact_k * sign(sold) * sqrt(|sold|/depth_usd)
(sqrt), where sold is the net forced selling of all rounds so far and depth_usd
and impact_k are per instrument in the instruments file.
With --from-kafka instead of BOOK: the group view, i.e. the latest partial of
every instance on the [topics] partials topic (--config, --bootstrap), merged.
Its map is exact; its cascade is an approximation printed under two bounds.
Exit status: 0; 1 with --strict when input lines were rejected; 2 on bad
arguments.
"""


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _percent(text: str) -> float:
    try:
        v = float(text.removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage, got {text!r}") from None
    if not 0.0 < v < 100.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 100, got {text!r}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = _EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument(
        "book", type=Path, nargs="?", default=None,
        help="JSONL event file or `monitor record` recording whose final state is "
        "stressed (not with --from-kafka)",
    )  # fmt: skip
    p.add_argument(
        "--from-kafka", action="store_true",
        help="stress the group view: the latest partial of every instance on the partials "
        "topic, merged (the map is exact; the cascade an approximation with two bounds)",
    )  # fmt: skip
    p.add_argument(
        "--config", type=Path, default=None,
        help="daemon config whose [kafka] and [topics] --from-kafka uses (default: bundled)",
    )  # fmt: skip
    p.add_argument(
        "--bootstrap", default=None, metavar="HOST:PORT,...",
        help="Kafka bootstrap servers for --from-kafka (overrides the config)",
    )  # fmt: skip
    p.add_argument(
        "--instruments", type=Path, default=None, help="instruments TOML (default: bundled)"
    )
    add_prices_topic(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--map", action="store_true", help="print the liquidation map of every underlying"
    )
    what.add_argument(
        "--shock", action="append", metavar="U=X%",
        help="shock an underlying, e.g. BTC=-10%% or ETH=-0.05 (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--impact", choices=[m.value for m in ImpactModel], default=ImpactModel.LINEAR.value,
        help="price impact model of the cascade (default: linear)",
    )  # fmt: skip
    p.add_argument(
        "--max-rounds", type=_positive_int, default=10, metavar="N",
        help="stop the cascade after N rounds (default: 10)",
    )  # fmt: skip
    p.add_argument(
        "--max-move", type=_percent, default=30.0, metavar="PCT",
        help="map grid from -PCT%% to +PCT%% (default: 30)",
    )  # fmt: skip
    p.add_argument(
        "--step", type=_percent, default=1.0, metavar="PCT",
        help="map grid step in %% (default: 1)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.add_argument(
        "--accounts", action="store_true", help="list the liquidated accounts per round (JSON)"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 if any line was rejected")


def _grid(max_move: float, step: float) -> list[float]:
    n = round(max_move / step)
    if n < 1 or n > 10_000 or abs(n * step - max_move) > 1e-9 * max_move:
        raise ConfigError(f"--max-move {max_move:g} is not a whole number of --step {step:g}")
    return [k * step / 100.0 for k in range(-n, n + 1)]


def run(args: argparse.Namespace) -> int:
    params = load_instruments(args.instruments)
    # Arguments are checked before the (possibly long) load.
    scenario = None if args.map else parse_scenario(args.shock, params)
    if args.from_kafka:
        if args.book is not None:
            raise ConfigError("give either BOOK or --from-kafka, not both")
        from monitor.cli.group_stress import run_from_kafka

        return run_from_kafka(args, params, scenario)
    if args.book is None:
        raise ConfigError("BOOK is required (or --from-kafka)")
    grid = _grid(args.max_move, args.step) if args.map else []
    book, rejected, _ = load_book(args.book, params, args.prices_topic)
    if rejected:
        first = ", ".join(f"line {r['line']} ({r['reason']})" for r in rejected[:3])
        more = f" and {len(rejected) - 3} more" if len(rejected) > 3 else ""
        sys.stderr.write(
            f"monitor stress: {args.book}: {len(rejected)} lines rejected: {first}{more}\n"
        )
    snap = take_snapshot(book)
    if scenario is None:
        m = liquidation_map(snap, grid)
        doc = m.to_json()
        text = format_map(m)
    else:
        r = run_cascade(snap, scenario, impact=args.impact, max_rounds=args.max_rounds)
        doc = r.to_json(with_accounts=args.accounts)
        text = format_cascade(r)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return 1 if args.strict and rejected else 0
