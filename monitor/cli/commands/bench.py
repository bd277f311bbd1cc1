"""``monitor bench``: the standard performance figures, printed as a table."""

from __future__ import annotations

import argparse
import sys

NAME = "bench"
HELP = "Measure the standard performance figures on a deterministic synthetic book."


def _positive(text: str) -> int:
    try:
        v = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--accounts",
        type=_positive,
        default=1_000_000,
        help="accounts in the synthetic book (default 1,000,000)",
    )
    p.add_argument(
        "--suite",
        action="append",
        choices=["book", "loop", "mixed", "cascade", "replay"],
        help="run only these suites (repeatable; default: all)",
    )


def run(args: argparse.Namespace) -> int:
    from monitor.bench import cascade, replay
    from monitor.bench.book import bench_book, bench_mixed_stream, bench_python_loop
    from monitor.bench.report import render

    suites = args.suite or ["book", "loop", "mixed", "cascade", "replay"]
    out = sys.stdout
    out.write(f"monitor bench --accounts {args.accounts}\n")
    rows = []
    if "book" in suites:
        rows += bench_book(args.accounts)
    if "loop" in suites:
        rows += bench_python_loop(min(10_000, args.accounts))
    if "mixed" in suites:
        rows += bench_mixed_stream(min(100_000, args.accounts))
    if "cascade" in suites:
        rows += cascade.rows(args.accounts)
    if "replay" in suites:
        rows += replay.rows(args.accounts)
    out.write(render(rows) + "\n")
    return 0
