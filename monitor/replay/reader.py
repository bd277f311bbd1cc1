"""Recordings on disk as :class:`~monitor.replay.batch.Batch` columns.

- JSONL (DESIGN.md section 3), plain, gzip or zstd: read in large chunks,
  canonical tick lines parsed by :mod:`monitor.replay.parse`, every other
  line decoded (or rejected) by the wire :class:`~monitor.events.Decoder`,
  the same one the daemon uses; ``monitor record`` lines (a Kafka message
  around a wire value) are unwrapped first (:mod:`monitor.replay.records`).
- CSV ticks (``ts,symbol,price``; a single-symbol file may take its symbol
  from the caller): through :func:`monitor.sources.files.read_csv_ticks`, so a
  row that is not even CSV-shaped is reported as a
  :class:`~monitor.sources.files.BadLine` with its file and line.

Line numbers are 1-based and count blank lines, like a text editor.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import zstandard

from monitor.errors import InputError
from monitor.events.decode import Decoder
from monitor.events.schema import Tick
from monitor.replay.batch import NO_TIME, OBJECT, TICK, Batch, running_key
from monitor.replay.parse import BLANK, SLOW, TickParser
from monitor.replay.records import DEFAULT_PRICES_TOPIC, RecordDecoder
from monitor.sources.files import BadLine, Line, event_time, open_binary, read_csv_ticks

CHUNK_BYTES = 4 << 20
CSV_ROWS = 1 << 16


def is_csv(path: str | Path) -> bool:
    name = Path(path).name.lower()
    for suffix in (".gz", ".zst", ".zstd"):
        name = name.removesuffix(suffix)
    return name.endswith(".csv")


class StreamReader:
    """One recording as batches; ``stream`` is its index in the merge."""

    def __init__(
        self,
        path: str | Path,
        stream: int,
        decoder: Decoder,
        parser: TickParser,
        symbol_id: dict[str, int],
        *,
        symbol: str | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        prices_topic: str = DEFAULT_PRICES_TOPIC,
    ) -> None:
        """``prices_topic``: the topic whose record lines may omit ``type``."""
        self.path = Path(path)
        self.name = str(path)
        self.stream = stream
        self._decoder = decoder
        self._records = RecordDecoder(decoder, prices_topic)
        self._parser = parser
        self._sid = symbol_id
        self._symbol = symbol
        self._chunk = chunk_bytes
        self._key = NO_TIME
        self.lines = 0  # lines read so far (blank ones included)

    def batches(self) -> Iterator[Batch]:
        if is_csv(self.path):
            return self._csv()
        return self._jsonl()

    # ------------------------------------------------------------ JSONL
    def _jsonl(self) -> Iterator[Batch]:
        fh = open_binary(self.path)  # raises InputError naming the file
        carry = b""
        try:
            with fh:
                while True:
                    try:
                        chunk = fh.read(self._chunk)
                    except (OSError, EOFError, zstandard.ZstdError) as exc:
                        raise InputError(
                            f"{self.name}: corrupt or truncated after line {self.lines}: {exc}"
                        ) from exc
                    data = carry + chunk if carry else chunk
                    if not chunk:
                        if data:
                            yield self._lines(data + b"\n")
                        return
                    cut = data.rfind(b"\n") + 1
                    carry = data[cut:]
                    if cut:
                        yield self._lines(data[:cut])
        except OSError as exc:  # closing a corrupt stream
            raise InputError(f"{self.name}: cannot read: {exc}") from exc

    def _lines(self, data: bytes) -> Batch:
        """Rows of complete lines (``data`` ends with a newline)."""
        buf = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(buf == 10).astype(np.int64)
        starts = np.empty_like(ends)
        if ends.shape[0]:
            starts[0] = 0
            starts[1:] = ends[:-1] + 1
        kind, sym, price, ts = self._parser.parse(buf, starts, ends)
        line = np.arange(self.lines + 1, self.lines + 1 + ends.shape[0], dtype=np.int64)
        self.lines += int(ends.shape[0])
        keep = kind != BLANK
        if not keep.all():
            kind, sym, price, ts, line = kind[keep], sym[keep], price[keep], ts[keep], line[keep]
            starts, ends = starts[keep], ends[keep]
        objs: list[object] = []
        slow = np.flatnonzero(kind == SLOW)
        if slow.shape[0]:
            decode = self._records.decode_line  # wire lines and record lines alike
            for i in slow.tolist():
                raw = data[int(starts[i]) : int(ends[i])].rstrip(b"\r")
                ev, t = decode(raw)
                if isinstance(ev, Tick):
                    kind[i] = TICK
                    sym[i] = self._sid[ev.symbol]
                    price[i] = ev.price
                    ts[i] = ev.ts
                else:
                    ts[i] = NO_TIME if t is None else t
                    objs.append(ev)
        return self._batch(kind, sym, price, ts, line, objs)

    def _batch(
        self,
        kind: np.ndarray,
        sym: np.ndarray,
        price: np.ndarray,
        ts: np.ndarray,
        line: np.ndarray,
        objs: list[object],
    ) -> Batch:
        key, self._key = running_key(ts, self._key)
        stream = np.full(kind.shape[0], self.stream, dtype=np.int32)
        return Batch(stream, line, ts, key, kind, sym, price, objs)

    # ------------------------------------------------------------ CSV
    def _csv(self) -> Iterator[Batch]:
        records = read_csv_ticks(self.path, self._symbol, self.name)
        while True:
            chunk = list(islice(records, CSV_ROWS))
            if not chunk:
                return
            yield self._csv_rows(chunk)

    def _csv_rows(self, chunk: list[Line | BadLine]) -> Batch:
        n = len(chunk)
        kind = np.full(n, OBJECT, dtype=np.int8)
        sym = np.zeros(n, dtype=np.int32)
        price = np.zeros(n, dtype=np.float64)
        ts = np.full(n, NO_TIME, dtype=np.int64)
        line = np.zeros(n, dtype=np.int64)
        objs: list[object] = []
        dec = self._decoder
        for i, rec in enumerate(chunk):
            line[i] = rec.line_no
            if isinstance(rec, BadLine):
                objs.append(rec)
                continue
            ev = dec.decode_event(rec.raw)
            if isinstance(ev, Tick):
                kind[i] = TICK
                sym[i] = self._sid[ev.symbol]
                price[i] = ev.price
                ts[i] = ev.ts
            else:
                t = event_time(rec.raw)
                ts[i] = NO_TIME if t is None else t
                objs.append(ev)
        self.lines = int(line[-1])
        return self._batch(kind, sym, price, ts, line, objs)


__all__ = ["CHUNK_BYTES", "StreamReader", "is_csv"]
