"""``monitor bench``: the standard performance figures, printed as a table."""

from __future__ import annotations

import argparse
import sys
from typing import Any

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


def _bootstrap(text: str) -> str:
    for server in text.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise argparse.ArgumentTypeError(f"expected HOST:PORT[,HOST:PORT...], got {text!r}")
    return text


class _Given(argparse.Action):
    """Stores the value and notes that it was given (the default depends on the suite)."""

    def __call__(self, parser: Any, ns: argparse.Namespace, value: Any, opt: Any = None) -> None:
        setattr(ns, self.dest, value)
        setattr(ns, f"{self.dest}_given", True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--accounts",
        type=_positive,
        default=1_000_000,
        action=_Given,
        help="accounts in the synthetic book (default 1,000,000; 100,000 with "
        "--kafka, --alert-latency and --scale)",
    )
    p.add_argument(
        "--suite",
        action="append",
        choices=["book", "loop", "mixed", "cascade", "replay"],
        help="run only these suites (repeatable; default: all)",
    )
    add_kafka_arguments(p)


def add_kafka_arguments(p: argparse.ArgumentParser) -> None:
    """The end-to-end suites (brokers started here unless --bootstrap names one)."""
    g = p.add_argument_group("end-to-end suites (run instead of the book suites)")
    g.add_argument(
        "--kafka",
        action="store_true",
        help="Kafka ingest: daemon vs raw consume ceiling, tick-to-evaluation latency",
    )
    g.add_argument(
        "--alert-latency",
        action="store_true",
        help="tick-to-alert latency: Kafka -> monitor -> Mosquitto -> subscriber",
    )
    g.add_argument(
        "--scale",
        action="store_true",
        help="aggregate ingest of one vs two `monitor run` instances in one group",
    )
    g.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        type=_bootstrap,
        help="bench against this Kafka broker (default: start a local Tansu broker)",
    )
    g.add_argument(
        "--messages",
        type=_positive,
        default=1_000_000,
        help="messages in the load of --kafka and --scale (default 1,000,000)",
    )


def _run_kafka_suites(args: argparse.Namespace) -> int:
    import os
    import tempfile

    from monitor.bench.report import render
    from monitor.logs import configure_logging

    accounts = args.accounts if getattr(args, "accounts_given", False) else 100_000
    fd, path = tempfile.mkstemp(prefix="monitor-bench-", suffix=".log")
    log = os.fdopen(fd, "w")  # stays open: the daemon logs into it while the suites run
    configure_logging("info", json=True, stream=log)
    out = sys.stdout
    where = args.bootstrap or "a local Tansu broker"
    out.write(f"monitor bench, {accounts:,} accounts, against {where} (daemon log: {path})\n")
    if args.kafka:
        from monitor.bench import kafka

        out.write(f"\n--kafka --messages {args.messages}\n")
        r = kafka.bench_kafka(args.bootstrap, args.messages, accounts)
        out.write(render(kafka.rows(r)) + "\n")
    if args.alert_latency:
        from monitor.bench import alert_latency

        out.write("\n--alert-latency\n")
        r = alert_latency.bench_alert_latency(args.bootstrap, accounts)
        out.write(render(alert_latency.rows(r)) + "\n")
    if args.scale:
        from monitor.bench import scale

        out.write(f"\n--scale --messages {args.messages}\n")
        r = scale.bench_scale(args.bootstrap, args.messages, accounts)
        out.write(render(scale.rows(r)) + "\n")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.kafka or args.alert_latency or args.scale:
        return _run_kafka_suites(args)
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
