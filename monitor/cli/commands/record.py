"""``monitor record``: Kafka topics to a JSONL recording (one message per line).

Each line keeps the message's topic, partition, offset, key, timestamp and
value (the original JSON embedded as is, or base64 when it is not JSON); see
:class:`monitor.sources.kafka.RecordedMessage`. ``monitor publish`` writes such
a file back. Every partition is read from the beginning, outside any consumer
group; ``--from-now`` skips records whose timestamp is older than the start
(the broker is not asked for end offsets or time indexes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

NAME = "record"
HELP = "Record Kafka topics to a JSONL file (.zst/.gz compressed by name; - for stdout)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--topics",
        default=None,
        help="comma-separated topics (default: the prices and account-events topics of the config)",
    )
    parser.add_argument("--out", required=True, metavar="FILE", help="output file, or - for stdout")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    stop.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    parser.add_argument("--bootstrap", help="host:port[,host:port] (default: from the config)")
    parser.add_argument("--config", metavar="FILE", default=os.environ.get("MONITOR_CONFIG"))
    parser.add_argument(
        "--from-now", action="store_true", help="skip messages timestamped before the start"
    )


def run(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.errors import ConfigError

    if args.count is not None and args.count < 1:
        raise ConfigError("--count must be >= 1")
    if args.duration is not None and args.duration <= 0:
        raise ConfigError("--duration must be > 0")
    config = load_config(args.config)
    kafka = config.kafka
    if args.bootstrap:
        from dataclasses import replace

        kafka = replace(kafka, bootstrap_servers=args.bootstrap)
    topics = (
        [t.strip() for t in args.topics.split(",") if t.strip()]
        if args.topics
        else [config.topics.prices, config.topics.account_events]
    )
    n = asyncio.run(_record(kafka, topics, args.out, args.count, args.duration, args.from_now))
    sys.stderr.write(f"monitor record: {n} messages from {', '.join(topics)} to {args.out}\n")
    return 0


async def _record(
    kafka: Any, topics: list[str], out: str, count: int | None, duration: float | None,
    from_now: bool,
) -> int:  # fmt: skip
    import msgspec
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from monitor.errors import InputError
    from monitor.sources.kafka import consumer_options, recorded

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    consumer = AIOKafkaConsumer(**consumer_options(kafka, group=False))
    await consumer.start()
    written = 0
    start_ms = time.time_ns() // 1_000_000
    deadline = None if duration is None else time.monotonic() + duration
    enc = msgspec.json.Encoder()
    try:
        await consumer.topics()
        tps = []
        for t in topics:
            parts = consumer.partitions_for_topic(t)
            if not parts:
                raise InputError(f"topic {t!r} does not exist on {kafka.bootstrap_servers}")
            tps += [TopicPartition(t, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        with _Output(out) as sink:
            while not stop.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                wait_ms = 200 if left is None else max(1, min(200, int(left * 1000)))
                data = await consumer.getmany(timeout_ms=wait_ms)
                lines = []
                for recs in data.values():
                    for rec in recs:
                        if from_now and rec.timestamp < start_ms:
                            continue
                        lines.append(enc.encode(recorded(rec)))
                if count is not None:
                    lines = lines[: count - written]
                if lines:
                    sink.write(b"\n".join(lines) + b"\n")
                    written += len(lines)
                if count is not None and written >= count:
                    break
    finally:
        await consumer.stop()
    return written


class _Output:
    """A recording being written: temp file renamed into place on success (or on a
    stop by signal), compressed by the name (.zst, .gz)."""

    def __init__(self, out: str) -> None:
        self.out = out
        self._raw: IO[bytes] | None = None
        self._tmp: Path | None = None
        self._stream: Any = None
        self._closers: list[Any] = []

    def __enter__(self) -> _Output:
        import zstandard

        from monitor.errors import InputError

        if self.out == "-":
            self._stream = sys.stdout.buffer
            return self
        dest = Path(self.out)
        self._tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
        try:
            self._raw = open(self._tmp, "xb")
        except OSError as exc:
            raise InputError(f"{dest}: cannot write: {exc.strerror or exc}") from exc
        name = dest.name.lower()
        if name.endswith((".zst", ".zstd")):
            self._stream = zstandard.ZstdCompressor(level=3).stream_writer(self._raw, closefd=False)
            self._closers.append(self._stream)
        elif name.endswith(".gz"):
            self._stream = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0)
            self._closers.append(self._stream)
        else:
            self._stream = self._raw
        return self

    def write(self, data: bytes) -> None:
        self._stream.write(data)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.out == "-":
            sys.stdout.buffer.flush()
            return
        for c in self._closers:
            c.close()
        assert self._raw is not None and self._tmp is not None
        self._raw.close()
        if exc_type is None:
            os.replace(self._tmp, self.out)
        else:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
