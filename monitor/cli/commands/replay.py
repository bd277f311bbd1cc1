"""``monitor replay FILE...``: recorded streams through the daemon's engine."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson

from monitor.errors import ConfigError, InputError

NAME = "replay"
HELP = "Replay recorded tick and account streams through the engine: alerts, summary, report."
_EPILOG = """\
Files are JSONL in the wire format, `monitor record` recordings (each message's
value is decoded as the daemon decodes its topic: on the prices topic of
--config `type` may be omitted), or CSV ticks (ts,symbol,price; a file of one
symbol may have ts,price with --symbol), plain, .gz or .zst; several files are
merged by event time (equal times keep the order of the files, then of the
lines). List the file holding the accounts' positions and balances first so
they apply before ticks of the same time.

Alerts are JSON lines, to --alerts-out or else to stdout; the summary goes to
stdout when alerts go to a file, to stderr otherwise. The same input always
gives the same alerts file, byte for byte (alert times are event times).

--window-ms 0 (the default) evaluates every tick in order; a window groups
events by event time, collapses each symbol's ticks to the latest and
evaluates once per window. --from starts alerting at that time (earlier
events only build the state); --to stops before it. Times are epoch
milliseconds or ISO-8601 (UTC unless a zone is given).

Exit status: 0; 1 with --strict when lines were rejected; 2 on bad arguments,
configuration or unreadable input.
"""


def _speed(text: str) -> float:
    try:
        v = float(text.removesuffix("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return v


def _non_negative(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _positive(text: str) -> int:
    v = _non_negative(text)
    if v == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def _time(text: str) -> int:
    from monitor.sources.files import parse_time_ms

    try:
        return parse_time_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = _EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="recordings to replay")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=_speed, metavar="X",
                      help="pace at X times real time (e.g. 10)")  # fmt: skip
    pace.add_argument("--max-speed", action="store_true",
                      help="do not wait between events (the default)")  # fmt: skip
    p.add_argument("--symbol", help="symbol of single-symbol CSV files (ts,price)")
    p.add_argument("--instruments", type=Path, help="instruments TOML (default: from --config, "
                   "else bundled)")  # fmt: skip
    p.add_argument("--config", type=Path,
                   help="monitor TOML: its [alerts] and [instruments] apply "
                   "(default: bundled)")  # fmt: skip
    p.add_argument("--alerts-out", type=Path, metavar="FILE",
                   help="write alerts as JSON lines here (replaced) instead of stdout")  # fmt: skip
    p.add_argument("--report", type=Path, metavar="DIR",
                   help="write an HTML report with plots to DIR/report.html")  # fmt: skip
    p.add_argument("--summary-json", type=Path, metavar="FILE",
                   help="also write the summary as JSON")  # fmt: skip
    p.add_argument("--from", dest="start", type=_time, metavar="T",
                   help="start alerting at T (earlier events build the state)")  # fmt: skip
    p.add_argument("--to", dest="end", type=_time, metavar="T", help="stop before T")
    p.add_argument("--window-ms", type=_non_negative, default=0, metavar="MS",
                   help="evaluate once per event-time window (default 0: every tick)")  # fmt: skip
    p.add_argument("--sample-ms", type=_positive, default=100, metavar="MS",
                   help="sample the book for the summary and report every MS of event time "
                   "(default 100; doubles as needed to keep at most 4096 points)")  # fmt: skip
    p.add_argument("--strict", action="store_true", help="exit 1 if any line was rejected")
    p.add_argument("--log-level", default="warning",
                   choices=["debug", "info", "warning", "error"],
                   help="log level on stderr (default warning; info logs every alert)")  # fmt: skip


def load_settings(config: Path | None, instruments: Path | None) -> tuple[Any, Any, str]:
    """(risk parameters, alerts config, prices topic) from the command line's files."""
    from monitor.alerts.config import AlertsConfig
    from monitor.config import load_config
    from monitor.instruments import load_instruments

    cfg = load_config(config)
    alerts = cfg.alerts if cfg.alerts is not None else AlertsConfig()
    inst = instruments if instruments is not None else (cfg.instruments.file or None)
    return load_instruments(inst), alerts, cfg.topics.prices


def run(args: argparse.Namespace) -> int:
    from monitor.logs import configure_logging
    from monitor.replay import Replay, ReplayOptions
    from monitor.replay.progress import ReplayProgress
    from monitor.replay.summary import render, summary
    from monitor.sinks.file import FileSink

    if args.start is not None and args.end is not None and args.end <= args.start:
        raise ConfigError("--to must be after --from")
    for f in args.files:
        if not f.is_file():
            raise InputError(f"{f}: no such file")
    configure_logging(args.log_level, stream=sys.stderr)
    params, alerts_cfg, prices_topic = load_settings(args.config, args.instruments)
    options = ReplayOptions(
        files=tuple(args.files),
        symbol=args.symbol,
        speed=args.speed,
        window_ms=args.window_ms,
        start_ms=args.start,
        end_ms=args.end,
        sample_ms=args.sample_ms,
        keep_worst=args.report is not None,
        prices_topic=prices_topic,
    )
    if args.alerts_out is not None:
        try:
            args.alerts_out.parent.mkdir(parents=True, exist_ok=True)
            args.alerts_out.write_bytes(b"")  # a fresh file: the replay's output alone
        except OSError as exc:
            raise ConfigError(f"--alerts-out {args.alerts_out}: {exc.strerror}") from exc
    sink = FileSink(args.alerts_out)
    replay = Replay(params, options, alerts_config=alerts_cfg, sinks=[sink],
                    progress=ReplayProgress())  # fmt: skip
    result = asyncio.run(replay.run())
    doc = summary(result)
    out = sys.stdout if args.alerts_out is not None else sys.stderr
    out.write(render(doc) + "\n")
    if args.summary_json is not None:
        args.summary_json.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    if args.report is not None:
        from monitor.report import write_report

        path = write_report(result, args.report)
        out.write(f"report: {path}\n")
    out.flush()
    return 1 if args.strict and doc["rejected"]["total"] else 0
