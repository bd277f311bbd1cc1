"""``monitor demo``: real crashes replayed against bundled synthetic books."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

NAME = "demo"
HELP = (
    "Replay the 2025-10-10 cascade and the 2021-05-19 BTC flash crash against bundled "
    "synthetic cross-margin books: live alerts, summary, HTML report."
)
_EPILOG = """\
Scenarios (default: both):
  cascade-2025-10-10  Binance hourly candles of BTC, ETH, SOL, DOGE, HYPE around
                      the 2025-10-10 cascade, against 3,000 accounts (seed 20251010)
  crash-2021-05-19    the 2021-05-19 BTC flash crash at 100 ms, against 2,000
                      accounts (seed 20210519)
The books are in monitor/data (demo_book_*.jsonl.zst); --accounts or --seed
generate another one. Each scenario writes alerts.jsonl and report.html under
--out/<scenario>/. The same replay is `monitor replay BOOK TICKS`.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from monitor.demo.scenarios import SCENARIOS

    p.epilog = _EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                   help="run only this scenario (repeatable; default: all)")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("demo-output"),
                   help="output directory (default: ./demo-output)")  # fmt: skip
    p.add_argument("--speed", type=float, default=None, metavar="X",
                   help="pace at X times real time (default: as fast as possible)")  # fmt: skip
    p.add_argument("--accounts", type=int, default=None, help="generate a book of N accounts")
    p.add_argument("--seed", type=int, default=None, help="generate a book from this seed")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from monitor.demo.run import run_scenario
    from monitor.demo.scenarios import SCENARIOS
    from monitor.errors import ConfigError
    from monitor.instruments import load_instruments
    from monitor.logs import configure_logging

    if args.speed is not None and not args.speed > 0:
        raise ConfigError(f"--speed: must be > 0, got {args.speed}")
    if args.accounts is not None and args.accounts < 1:
        raise ConfigError(f"--accounts: must be >= 1, got {args.accounts}")
    configure_logging("warning", stream=sys.stderr)
    params = load_instruments()
    console = Console(highlight=False)
    names = args.scenario or list(SCENARIOS)

    async def main() -> list[Path | None]:
        out: list[Path | None] = []
        for name in names:
            r = await run_scenario(SCENARIOS[name], params, args.out, console, speed=args.speed,
                                   accounts=args.accounts, seed=args.seed,
                                   report=not args.no_report)  # fmt: skip
            out.append(r.report)
        return out

    reports = asyncio.run(main())
    shown = [str(r) for r in reports if r is not None]
    if shown:
        console.rule("Reports")
        for r in shown:
            console.print(r, highlight=False, soft_wrap=True)
    return 0
