"""A compiled parser for the canonical tick line, the bulk of every recording.

``{"type":"tick","symbol":"BTC-PERP","price":64000.5,"ts":1700000000123}`` is
the exact byte layout :func:`monitor.events.schema.encode` writes (and so
``monitor record`` and ``monitor import``). Lines in that layout whose symbol
is known and whose price is positive are parsed here into columns, about
twenty times faster than decoding them one by one. Every other line (account
events, ticks written differently, anything malformed) is marked for the wire
:class:`~monitor.events.Decoder`, which decodes or rejects it exactly as the
daemon would. The fast path therefore accepts a strict subset of what the
decoder accepts and yields the same values for it:

- numbers follow the JSON grammar; a price is parsed exactly (correctly
  rounded, like the decoder) when its decimal significand fits in 53 bits and
  its power of ten in [-22, 22] (one IEEE multiplication or division of exact
  operands); other prices go to the decoder;
- the symbol must match a known symbol byte for byte (no escapes).

A ``monitor record`` line whose value is a canonical tick is parsed here too
when the wrapper is in the layout ``monitor record`` writes
(``{"topic":...,"partition":...,"offset":...,"key":...,"timestamp":...,"value":``
then the tick and ``}``; strings without escapes, JSON integers): a tick that
carries its ``type`` decodes the same on every topic
(:mod:`monitor.replay.records`).
"""

from __future__ import annotations

from typing import Final

import numba as nb
import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

FAST: Final = 0  # a canonical tick, parsed into the columns
SLOW: Final = 1  # anything else: for the wire decoder
BLANK: Final = 2  # only whitespace: no record

_PREFIX = np.frombuffer(b'{"type":"tick","symbol":"', dtype=np.uint8).copy()
_PRICE = np.frombuffer(b'","price":', dtype=np.uint8).copy()
_TS = np.frombuffer(b',"ts":', dtype=np.uint8).copy()
_POW10 = np.array([10.0**k for k in range(23)], dtype=np.float64)
# the fields of a record line in the order monitor record writes them
# (RecordedMessage; ``key`` is left out when there is none): 0 string, 1 integer, 2 value
_RECORD_FIELDS = ((b'{"topic":', 0), (b',"partition":', 1), (b',"offset":', 1), (b',"key":', 0),
                  (b',"timestamp":', 1), (b',"value":', 2))  # fmt: skip
_FIELDS = np.frombuffer(b"".join(f for f, _ in _RECORD_FIELDS), dtype=np.uint8).copy()
_FIELD_START = np.cumsum([0] + [len(f) for f, _ in _RECORD_FIELDS]).astype(np.int64)
_FIELD_KIND = np.array([k for _, k in _RECORD_FIELDS], dtype=np.int8)
_MAX_EXACT = 2**53


class SymbolTable:
    """Known symbols in an open-addressing hash table the kernel can probe."""

    def __init__(self, symbols: tuple[str, ...]) -> None:
        raw = [s.encode() for s in symbols]
        size = 16
        while size < 4 * max(1, len(raw)):
            size *= 2
        self.slots: I64 = np.full(size, -1, dtype=np.int64)
        self.offsets: I64 = np.zeros(len(raw) + 1, dtype=np.int64)
        self.offsets[1:] = np.cumsum([len(r) for r in raw])
        self.bytes: U8 = np.frombuffer(b"".join(raw) or b"\0", dtype=np.uint8).copy()
        for k, r in enumerate(raw):
            h = _fnv(np.frombuffer(r, dtype=np.uint8), 0, len(r)) & (size - 1)
            while self.slots[h] >= 0:
                h = (h + 1) & (size - 1)
            self.slots[h] = k


@nb.njit(cache=True, nogil=True)
def _fnv(buf: U8, lo: int, hi: int) -> int:
    h = np.uint64(14695981039346656037)
    for i in range(lo, hi):
        h = (h ^ np.uint64(buf[i])) * np.uint64(1099511628211)
    return int(h & np.uint64(0x7FFFFFFFFFFFFFFF))


@nb.njit(cache=True, nogil=True)
def _match(buf: U8, at: int, lit: U8) -> bool:
    if at + lit.shape[0] > buf.shape[0]:
        return False
    for k in range(lit.shape[0]):  # noqa: SIM110 - a compiled loop, not a generator
        if buf[at + k] != lit[k]:
            return False
    return True


@nb.njit(cache=True, nogil=True)
def _lookup(
    buf: U8, lo: int, hi: int, slots: I64, offsets: I64, sym_bytes: U8
) -> int:  # pragma: no cover - compiled
    mask = slots.shape[0] - 1
    h = _fnv(buf, lo, hi) & mask
    n = hi - lo
    while True:
        k = slots[h]
        if k < 0:
            return -1
        a = offsets[k]
        if offsets[k + 1] - a == n:
            same = True
            for j in range(n):
                if sym_bytes[a + j] != buf[lo + j]:
                    same = False
                    break
            if same:
                return int(k)
        h = (h + 1) & mask


@nb.njit(cache=True, nogil=True)
def _tick_at(
    buf: U8,
    lo: int,
    hi: int,
    slots: I64,
    offsets: I64,
    sym_bytes: U8,
    prefix: U8,
    price_lit: U8,
    ts_lit: U8,
    pow10: npt.NDArray[np.float64],
) -> tuple[int, float, int]:  # pragma: no cover - compiled
    """The canonical tick exactly filling ``buf[lo:hi]``: ``(symbol, price, ts)``,
    symbol -1 when it is not one."""
    if hi - lo < prefix.shape[0] or not _match(buf, lo, prefix):
        return -1, 0.0, 0
    # symbol: up to the closing quote, no escapes or control characters
    j = lo + prefix.shape[0]
    s0 = j
    while j < hi and buf[j] != 34:
        if buf[j] == 92 or buf[j] < 32:
            return -1, 0.0, 0
        j += 1
    if j >= hi or j == s0:
        return -1, 0.0, 0
    s = _lookup(buf, s0, j, slots, offsets, sym_bytes)
    if s < 0 or not _match(buf, j, price_lit):
        return -1, 0.0, 0
    j += price_lit.shape[0]
    # price: JSON number, positive
    w = 0
    digits = 0
    if j >= hi or buf[j] < 48 or buf[j] > 57:
        return -1, 0.0, 0
    if buf[j] == 48:
        j += 1
        if j < hi and 48 <= buf[j] <= 57:
            return -1, 0.0, 0  # a leading zero
    else:
        while j < hi and 48 <= buf[j] <= 57:
            if digits or buf[j] != 48:
                digits += 1
            w = w * 10 + (buf[j] - 48)
            j += 1
            if digits > 17:
                return -1, 0.0, 0
    exp10 = 0
    if j < hi and buf[j] == 46:
        j += 1
        f0 = j
        while j < hi and 48 <= buf[j] <= 57:
            if digits or buf[j] != 48:
                digits += 1
            w = w * 10 + (buf[j] - 48)
            exp10 -= 1
            j += 1
            if digits > 17:
                return -1, 0.0, 0
        if j == f0:
            return -1, 0.0, 0
    if j < hi and (buf[j] == 101 or buf[j] == 69):
        j += 1
        neg = False
        if j < hi and (buf[j] == 43 or buf[j] == 45):
            neg = buf[j] == 45
            j += 1
        e0 = j
        e = 0
        while j < hi and 48 <= buf[j] <= 57 and j - e0 < 5:
            e = e * 10 + (buf[j] - 48)
            j += 1
        if j == e0 or (j < hi and 48 <= buf[j] <= 57):
            return -1, 0.0, 0
        exp10 += -e if neg else e
    if w == 0 or w > 9007199254740992 or exp10 < -22 or exp10 > 22:
        return -1, 0.0, 0
    value = float(w) * pow10[exp10] if exp10 >= 0 else float(w) / pow10[-exp10]
    if not _match(buf, j, ts_lit):
        return -1, 0.0, 0
    j += ts_lit.shape[0]
    t0 = j
    t = 0
    while j < hi and 48 <= buf[j] <= 57 and j - t0 < 18:
        t = t * 10 + (buf[j] - 48)
        j += 1
    if j == t0 or (j < hi and 48 <= buf[j] <= 57) or (buf[t0] == 48 and j - t0 > 1):
        return -1, 0.0, 0
    if j != hi - 1 or buf[j] != 125:
        return -1, 0.0, 0
    return s, value, t


@nb.njit(cache=True, nogil=True)
def _string_end(buf: U8, j: int, hi: int) -> int:  # pragma: no cover - compiled
    """After the JSON string opening at ``buf[j]`` (a quote), without escapes or
    control characters; -1 when it is not one."""
    if j >= hi or buf[j] != 34:
        return -1
    j += 1
    while j < hi and buf[j] != 34:
        if buf[j] == 92 or buf[j] < 32:
            return -1
        j += 1
    return j + 1 if j < hi else -1


@nb.njit(cache=True, nogil=True)
def _int_end(buf: U8, j: int, hi: int) -> int:  # pragma: no cover - compiled
    """After the JSON integer at ``buf[j]`` (at most 18 digits); -1 if none."""
    if j < hi and buf[j] == 45:
        j += 1
    d0 = j
    while j < hi and 48 <= buf[j] <= 57 and j - d0 < 19:
        j += 1
    n = j - d0
    if n == 0 or n > 18 or (buf[d0] == 48 and n > 1):
        return -1
    return j


@nb.njit(cache=True, nogil=True)
def _record_value(
    buf: U8, lo: int, hi: int, fields: U8, field_start: I64, kinds: npt.NDArray[np.int8]
) -> int:  # pragma: no cover - compiled
    """Where the value of a ``monitor record`` line in its canonical layout starts
    (``{"topic":"..."`` then the optional fields in order, then ``,"value":`` and
    the value up to the closing brace at ``hi - 1``); -1 when the line is not in
    that layout. ``fields`` holds the literals ``{"topic":``, ``,"partition":``,
    ..., ``,"value":`` one after the other (``field_start`` bounds them) and
    ``kinds`` what each one introduces (0 string, 1 integer, 2 the value)."""
    if hi - lo < 2 or buf[hi - 1] != 125:
        return -1
    j = lo
    for f in range(kinds.shape[0]):
        a = field_start[f]
        lit = fields[a : field_start[f + 1]]
        if not _match(buf, j, lit):
            if f == 0 or kinds[f] == 2:
                return -1  # topic and value are required
            continue
        j += lit.shape[0]
        if kinds[f] == 0:
            j = _string_end(buf, j, hi)
        elif kinds[f] == 1:
            j = _int_end(buf, j, hi)
        else:
            return int(j)
        if j < 0:
            return -1
    return -1


@nb.njit(cache=True, nogil=True)
def parse_lines(
    buf: U8,
    starts: I64,
    ends: I64,
    slots: I64,
    offsets: I64,
    sym_bytes: U8,
    prefix: U8,
    price_lit: U8,
    ts_lit: U8,
    pow10: npt.NDArray[np.float64],
    fields: U8,
    field_start: I64,
    field_kind: npt.NDArray[np.int8],
    kind: npt.NDArray[np.int8],
    sym: npt.NDArray[np.int32],
    price: npt.NDArray[np.float64],
    ts: I64,
) -> None:  # pragma: no cover - compiled
    """Classify each line ``buf[starts[i]:ends[i]]`` and parse the canonical ticks,
    bare or as the value of a record line."""
    for i in range(starts.shape[0]):
        lo = starts[i]
        hi = ends[i]
        while hi > lo and (buf[hi - 1] == 13 or buf[hi - 1] == 32 or buf[hi - 1] == 9):
            hi -= 1
        blank = True
        for j in range(lo, hi):
            c = buf[j]
            if c != 32 and c != 9 and c != 13:
                blank = False
                break
        if blank:
            kind[i] = 2
            continue
        kind[i] = 1
        if hi - lo > 3 and buf[lo + 2] == 116 and buf[lo + 3] == 111:  # {"to...: a record
            v = _record_value(buf, lo, hi, fields, field_start, field_kind)
            if v < 0:
                continue
            lo = v
            hi -= 1
        s, value, t = _tick_at(buf, lo, hi, slots, offsets, sym_bytes, prefix, price_lit, ts_lit,
                               pow10)  # fmt: skip
        if s < 0:
            continue
        kind[i] = 0
        sym[i] = s
        price[i] = value
        ts[i] = t


class TickParser:
    """Splits buffers into lines and parses the canonical ticks among them."""

    def __init__(self, symbols: tuple[str, ...]) -> None:
        self.table = SymbolTable(symbols)

    def parse(
        self, buf: U8, starts: I64, ends: I64
    ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int32], npt.NDArray[np.float64], I64]:
        n = starts.shape[0]
        kind = np.empty(n, dtype=np.int8)
        sym = np.zeros(n, dtype=np.int32)
        price = np.zeros(n, dtype=np.float64)
        ts = np.zeros(n, dtype=np.int64)
        t = self.table
        parse_lines(buf, starts, ends, t.slots, t.offsets, t.bytes, _PREFIX, _PRICE, _TS,
                    _POW10, _FIELDS, _FIELD_START, _FIELD_KIND, kind, sym, price, ts)  # fmt: skip
        return kind, sym, price, ts


__all__ = ["BLANK", "FAST", "SLOW", "SymbolTable", "TickParser", "parse_lines"]
