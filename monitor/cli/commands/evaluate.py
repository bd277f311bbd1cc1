"""``monitor evaluate FILE``: apply an event file, print every account's state as JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from monitor.book.store import MarginBook
from monitor.events.decode import Decoder, Rejection
from monitor.instruments import load_instruments
from monitor.instruments.model import RiskParams
from monitor.replay.records import DEFAULT_PRICES_TOPIC, RecordDecoder
from monitor.risk.report import account_report
from monitor.sources.files import read_jsonl

NAME = "evaluate"
HELP = "Apply a JSONL event file (.gz/.zst too) and print the final state of every account."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="JSONL event file or `monitor record` recording "
                   "(plain, .gz or .zst)")  # fmt: skip
    p.add_argument(
        "--instruments", type=Path, default=None, help="instruments TOML (default: bundled)"
    )
    add_prices_topic(p)
    p.add_argument("--strict", action="store_true", help="exit 1 if any line was rejected")
    p.add_argument("--compact", action="store_true", help="one-line JSON instead of indented")


def add_prices_topic(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prices-topic", default=DEFAULT_PRICES_TOPIC, metavar="NAME",
        help="in a recording, the topic whose values may omit `type` (default: prices)",
    )  # fmt: skip


def load_book(
    path: Path, params: RiskParams, prices_topic: str = DEFAULT_PRICES_TOPIC
) -> tuple[MarginBook, list[dict[str, Any]], int]:
    """Apply every line of an event file (wire lines, or ``monitor record`` lines)
    in order; returns the book, the rejected lines (line number, reason, detail)
    and the number of events read."""
    book = MarginBook(params)
    decode = RecordDecoder(Decoder(params), prices_topic).decode_line
    rejected: list[dict[str, Any]] = []
    events = 0
    for _, line_no, raw in read_jsonl(path):
        events += 1
        ev, _ts = decode(raw)
        if not isinstance(ev, Rejection):
            r = book.apply(ev)
            if r is None:
                continue
            ev = r
        rejected.append({"line": line_no, "reason": ev.reason.value, "detail": ev.detail})
    return book, rejected, events


def run(args: argparse.Namespace) -> int:
    params = load_instruments(args.instruments)
    book, rejected, events = load_book(args.file, params, args.prices_topic)
    doc = {
        "accounts": [account_report(book, a) for a in range(book.n_accounts)],
        "rejected": rejected,
        "summary": {
            "events": events,
            "accounts": book.n_accounts,
            "positions": book.n_positions,
            "rejected": len(rejected),
        },
    }
    opt = 0 if args.compact else orjson.OPT_INDENT_2
    sys.stdout.buffer.write(orjson.dumps(doc, option=opt | orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    sys.stdout.flush()
    return 1 if args.strict and rejected else 0
