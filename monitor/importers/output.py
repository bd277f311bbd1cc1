"""Write wire-format JSONL, compressed by the output name, atomically.

``*.zst`` is zstd, ``*.gz`` is gzip (with no timestamp in the header, so the
same input gives the same bytes), anything else plain; ``-`` is stdout. The
file is written next to its destination and renamed into place, so an import
that fails part-way never leaves a truncated recording behind.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import secrets
import sys
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import IO

import msgspec
import zstandard

from monitor.errors import MonitorError
from monitor.events.schema import Tick

_ZSTD_LEVEL = 19  # recordings are written once and read many times
_BATCH = 4096


def _encoded(ticks: Iterable[Tick]) -> Iterator[bytes]:
    enc = msgspec.json.Encoder()
    it = iter(ticks)
    while chunk := list(islice(it, _BATCH)):
        yield enc.encode_lines(chunk)


def write_ticks(out: str, ticks: Iterable[Tick]) -> int:
    """Write ``ticks`` as JSONL to ``out``; returns how many were written."""
    count = 0

    def counted() -> Iterator[Tick]:
        nonlocal count
        for t in ticks:
            count += 1
            yield t

    if out == "-":
        for block in _encoded(counted()):
            sys.stdout.buffer.write(block)
        sys.stdout.buffer.flush()
        return count
    dest = Path(out)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    try:
        raw = open(tmp, "xb")  # noqa: SIM115 - closed below; honours the umask
    except OSError as exc:
        raise MonitorError(f"{dest}: cannot write: {exc.strerror or exc}") from exc
    try:
        with raw:
            _write(raw, dest.name.lower(), _encoded(counted()))
        os.replace(tmp, dest)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise MonitorError(f"{dest}: cannot write: {exc.strerror or exc}") from exc
        raise
    return count


def _write(raw: IO[bytes], name: str, blocks: Iterator[bytes]) -> None:
    if name.endswith((".zst", ".zstd")):
        cctx = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_checksum=True)
        with cctx.stream_writer(raw, closefd=False) as zw:
            for block in blocks:
                zw.write(block)
    elif name.endswith(".gz"):
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            for block in blocks:
                gz.write(block)
    else:
        for block in blocks:
            raw.write(block)
