"""``monitor check-config``: validate a config file and print the effective config."""

from __future__ import annotations

import argparse
import sys

NAME = "check-config"
HELP = "Validate a config file (plus MONITOR_* overrides) and print the effective config."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the TOML config file to check")
    parser.add_argument(
        "--show-secrets", action="store_true", help="print passwords instead of ***"
    )


def run(args: argparse.Namespace) -> int:
    from monitor.config import load_config, to_toml
    from monitor.instruments import load_instruments

    config = load_config(args.file)
    load_instruments(config.instruments.file or None)  # the file it names must be valid too
    sys.stdout.write(f"# effective configuration: {config.source} + MONITOR_* environment\n")
    sys.stdout.write(to_toml(config.as_dict(redact=not args.show_secrets)))
    return 0
