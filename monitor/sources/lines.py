"""Numbered lines of a plain, gzip or zstandard file (by extension)."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import zstandard

from monitor.errors import InputError


def open_binary(path: Path) -> IO[bytes]:
    """Open a file for reading, decompressing `.gz` and `.zst` transparently."""
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    if path.suffix == ".gz":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    if path.suffix == ".zst":
        reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        return io.BufferedReader(reader)
    return raw


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of every non-blank line (line numbers start at 1)."""
    with open_binary(path) as f:
        try:
            for n, line in enumerate(f, start=1):
                line = line.strip()
                if line:
                    yield n, line
        except (OSError, EOFError, zstandard.ZstdError) as exc:
            raise InputError(f"{path}: cannot decompress: {exc}") from exc
