"""``monitor run``: the Kafka daemon (see :mod:`monitor.daemon`)."""

from __future__ import annotations

import argparse
import os

NAME = "run"
HELP = "Run the monitor daemon: Kafka in, alerts out, /metrics and /healthz, snapshots."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get("MONITOR_CONFIG"),
        help="config file (default: $MONITOR_CONFIG, else the packaged config/monitor.toml); "
        "MONITOR_<SECTION>_<KEY> variables override it",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )


def run(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.daemon import run_daemon
    from monitor.logs import configure_logging

    config = load_config(args.config)
    configure_logging(args.log_level)
    return run_daemon(config)
