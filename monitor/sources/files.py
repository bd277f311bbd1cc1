"""Recorded streams on disk, as numbered raw lines for the one wire decoder.

- Plain, gzip and zstd files are opened transparently (detected by their
  magic bytes, so a mis-named file still reads).
- JSONL files in the wire format yield :class:`Line` records.
- CSV tick files (``ts,symbol,price``, or ``timestamp_ms,price`` / ``ts,price``
  with a symbol given) are turned into the JSON bytes of a tick, so the same
  :class:`~monitor.events.Decoder` validates every source; a row that is not
  even CSV-shaped becomes a :class:`BadLine` naming the file and line.
- :func:`merge_by_event_time` merges several files lazily by event time.

Nothing is ever skipped silently: a line is either yielded for the decoder
(which rejects it with its line number) or reported as a :class:`BadLine`.
Only blank lines are dropped, and they carry no data.
"""

from __future__ import annotations

import gzip
import heapq
import io
import math
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import zstandard

from monitor.errors import InputError
from monitor.events.decode import RejectReason
from monitor.events.schema import Tick, encode

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_COMPRESSED_SUFFIXES = (".gz", ".zst", ".zstd")


class Line(NamedTuple):
    """One raw line of a recording: where it came from and its bytes."""

    source: str
    line_no: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that cannot even be turned into wire bytes, with where and why."""

    source: str
    line_no: int
    reason: RejectReason
    detail: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line_no}: {self.reason}: {self.detail}"


Record = Line | BadLine


# -- opening -----------------------------------------------------------------


def open_binary(path: str | Path) -> io.BufferedIOBase:
    """Open a plain, gzip or zstd file for binary reading (decompressed).

    Raises :class:`InputError` naming the file when it cannot be opened.
    """
    p = Path(path)
    try:
        raw = open(p, "rb")  # noqa: SIM115 - handed to the caller, who closes it
    except OSError as exc:
        raise InputError(f"{p}: cannot open: {exc.strerror or exc}") from exc
    try:
        magic = raw.peek(4)[:4]
        if magic.startswith(_GZIP_MAGIC):
            raw.close()
            return gzip.open(p, "rb")  # owns its file, unlike GzipFile(fileobj=...)
        if magic == _ZSTD_MAGIC:
            return io.BufferedReader(_ZstdFrames(raw), buffer_size=1 << 16)
    except OSError as exc:
        raw.close()
        raise InputError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    return raw


class _ZstdFrames(io.RawIOBase):
    """The decompressed bytes of a file of zstd frames.

    zstandard's own stream reader ends quietly when the last frame is cut
    off, which would make a truncated recording look complete; this one
    raises EOFError instead.
    """

    _CHUNK = 1 << 17

    def __init__(self, raw: io.BufferedReader) -> None:
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._frame = self._dctx.decompressobj()
        self._in_frame = False
        self._out = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._pos >= len(self._out):
            chunk = self._raw.read(self._CHUNK)
            if not chunk:
                if self._in_frame:
                    raise EOFError("the zstd stream ends inside a frame")
                return 0
            self._out, self._pos = self._decompress(chunk), 0
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def _decompress(self, data: bytes) -> bytes:
        parts: list[bytes] = []
        while data:
            self._in_frame = True
            parts.append(self._frame.decompress(data))
            if not self._frame.eof:
                break
            data = self._frame.unused_data
            self._frame = self._dctx.decompressobj()
            self._in_frame = False
        return b"".join(parts)

    def close(self) -> None:
        self._raw.close()
        super().close()


def read_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """``(line_no, bytes)`` for every line of a file, 1-based, end of line removed.

    The file is opened now (so a missing file fails here, not on first use);
    a file that turns out corrupt or truncated part-way raises
    :class:`InputError` naming the file and the last good line.
    """
    fh = open_binary(path)
    return _numbered(fh, str(path))


def _numbered(fh: io.BufferedIOBase, name: str) -> Iterator[tuple[int, bytes]]:
    n = 0
    try:
        with fh:
            for n, line in enumerate(fh, start=1):
                yield n, line.rstrip(b"\r\n")
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
        # gzip reports a corrupt deflate stream as zlib.error (not an OSError)
        raise InputError(f"{name}: corrupt or truncated after line {n}: {exc}") from exc


# -- readers -----------------------------------------------------------------


def read_jsonl(path: str | Path, source: str | None = None) -> Iterator[Line]:
    """The non-blank lines of a wire-format JSONL file (any compression)."""
    name = source if source is not None else str(path)
    lines = read_lines(path)
    return (Line(name, n, raw) for n, raw in lines if raw.strip())


_TS_COLUMNS = ("ts", "timestamp_ms")


@dataclass(frozen=True, slots=True)
class _CsvLayout:
    ts: int
    price: int
    symbol: int | None
    width: int


def _csv_layout(header: bytes, name: str, symbol: str | None) -> _CsvLayout:
    try:
        text = header.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}:1: CSV header is not UTF-8") from exc
    cols = [c.strip().strip('"').lower() for c in text.split(",")]
    ts_col = next((cols.index(c) for c in _TS_COLUMNS if c in cols), None)
    if ts_col is None or "price" not in cols:
        raise InputError(
            f"{name}:1: unknown CSV header {text.strip()!r}; expected ts,symbol,price "
            "or timestamp_ms,price (with a symbol given)"
        )
    sym_col = cols.index("symbol") if "symbol" in cols else None
    if sym_col is None and not symbol:
        raise InputError(f"{name}:1: the CSV has no symbol column; give the symbol it prices")
    return _CsvLayout(ts_col, cols.index("price"), sym_col, len(cols))


def read_csv_ticks(
    path: str | Path, symbol: str | None = None, source: str | None = None
) -> Iterator[Line | BadLine]:
    """Rows of a CSV tick file as the raw JSON bytes of tick events.

    The header is ``ts,symbol,price`` (any order, extra columns ignored) or,
    for a single-symbol file, ``timestamp_ms,price`` / ``ts,price`` with
    ``symbol`` given; a symbol column takes precedence over ``symbol``. A row
    with the wrong number of fields or a non-numeric value is a
    :class:`BadLine`; semantic checks (positive price, known symbol) are left
    to the decoder, which reports them with the same line number.
    """
    name = source if source is not None else str(path)
    lines = read_lines(path)
    for _n, header in lines:
        if header.strip():
            layout = _csv_layout(header, name, symbol)
            return _csv_rows(lines, layout, name, symbol or "")
    return iter(())


def _csv_rows(
    lines: Iterator[tuple[int, bytes]], layout: _CsvLayout, name: str, symbol: str
) -> Iterator[Line | BadLine]:
    for n, raw in lines:
        if not raw.strip():
            continue
        row = _csv_row(raw, layout, symbol)
        if isinstance(row, tuple):
            yield BadLine(name, n, row[0], row[1])
        else:
            yield Line(name, n, row)


def _csv_row(raw: bytes, layout: _CsvLayout, symbol: str) -> bytes | tuple[RejectReason, str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return RejectReason.MALFORMED_JSON, f"row is not UTF-8: {raw[:60]!r}"
    fields = [f.strip().strip('"') for f in text.split(",")]
    if len(fields) != layout.width:
        reason = (
            RejectReason.MISSING_FIELD if len(fields) < layout.width else RejectReason.BAD_VALUE
        )
        return reason, f"{len(fields)} fields, the header has {layout.width}: {text.strip()!r}"
    ts_text, price_text = fields[layout.ts], fields[layout.price]
    sym = fields[layout.symbol] if layout.symbol is not None else symbol
    if not sym:
        return RejectReason.MISSING_FIELD, "empty symbol"
    try:
        ts = int(ts_text)
    except ValueError:
        return RejectReason.BAD_TYPE, f"ts {ts_text!r} is not integer epoch milliseconds"
    try:
        price = float(price_text)
    except ValueError:
        return RejectReason.BAD_TYPE, f"price {price_text!r} is not a number"
    if not math.isfinite(price):
        return RejectReason.NON_FINITE, f"price is {price_text!r}"
    return encode(Tick(sym, price, ts))


def _plain_name(path: str | Path) -> str:
    name = Path(path).name.lower()
    for suffix in _COMPRESSED_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def read_recording(path: str | Path, symbol: str | None = None) -> Iterator[Line | BadLine]:
    """Any recording: ``*.csv[.gz|.zst]`` as CSV ticks, everything else as JSONL."""
    if _plain_name(path).endswith(".csv"):
        return read_csv_ticks(path, symbol)
    return read_jsonl(path)


# -- event time --------------------------------------------------------------


class _EventTime(msgspec.Struct):
    ts: int


_event_time = msgspec.json.Decoder(_EventTime)


def event_time(raw: bytes) -> int | None:
    """The integer ``ts`` of a wire line, or None when it cannot be read."""
    try:
        return _event_time.decode(raw).ts
    except msgspec.DecodeError:
        return None


def merge_by_event_time(streams: Iterable[Iterable[Record]]) -> Iterator[Record]:
    """Merge per-file streams into one, ordered by event time ``ts``.

    Lazy (one pending record per stream). Equal times keep file order, then
    line order. Each stream is expected in event-time order already and its
    own order is always kept. A record without a readable ``ts`` (a
    :class:`BadLine`, or a line the decoder will reject) is emitted at its
    position in its own stream: it takes the time of the line before it.
    """
    iters = [iter(s) for s in streams]
    last = [-(2**63)] * len(iters)
    heap: list[tuple[int, int, Record]] = []

    def push(i: int) -> None:
        rec = next(iters[i], None)
        if rec is None:
            return
        ts = event_time(rec.raw) if isinstance(rec, Line) else None
        if ts is not None:
            last[i] = max(last[i], ts)
        # (time, stream index) is unique in the heap: one pending record per stream.
        heapq.heappush(heap, (last[i], i, rec))

    for i in range(len(iters)):
        push(i)
    while heap:
        _, i, rec = heapq.heappop(heap)
        yield rec
        push(i)


# -- time window -------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time_ms(text: str) -> int:
    """Epoch milliseconds from ``1728518400000`` or ISO-8601 (``2025-10-10T21:00Z``).

    An ISO time without a zone is UTC. Raises ValueError with a readable
    message otherwise.
    """
    s = text.strip()
    if s.isdigit():
        return int(s)
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither epoch milliseconds nor an ISO-8601 time "
            "(e.g. 2025-10-10T21:00:00Z)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def within(
    records: Iterable[Record], start_ms: int | None = None, end_ms: int | None = None
) -> Iterator[Record]:
    """Only the records with ``start_ms <= ts < end_ms`` (either bound optional).

    Records whose time cannot be read pass through, so the decoder reports them.
    """
    for rec in records:
        if isinstance(rec, Line):
            ts = event_time(rec.raw)
            if ts is not None and (
                (start_ms is not None and ts < start_ms) or (end_ms is not None and ts >= end_ms)
            ):
                continue
        yield rec
