"""Import raw Binance websocket recordings (``<recv_ns> <json>`` per line).

This is the format of the hftbacktest recorder: each line is the local
receive time in nanoseconds, a space, and the raw combined-stream message
(``{"stream": "btcusdt@trade", "data": {...}}``), or a REST depth snapshot
(``{"lastUpdateId": ...}``, no ``stream``).

- ``@trade`` / ``@aggTrade``: a tick at the trade price ``p``, at the exchange
  trade time ``T``.
- ``@bookTicker``: a tick at the mid price ``(b + a) / 2``, at ``T`` or ``E``.
  Spot book tickers carry no exchange time, and the recorder's clock runs
  about 1.4 s behind the exchange, so their time is the receive time plus the
  exchange-minus-receive offset last seen in the same file (from any message
  that carries ``E``; book tickers met before the first such message wait for
  it). Only a file with no exchange time at all keeps bare receive times.
  ``--prices trade`` or ``book`` keeps one kind only.
- ``@markPrice``: a tick at the mark price ``p``, at ``E``.
- Depth updates, depth snapshots and ``forceOrder`` carry no price tick: they
  are counted as known messages. Anything else is a bad line.

Symbols come from the stream name and the market, which is read from the file
name prefix (``usdm_``, ``spot_``, ``cm_``) unless given: ``btcusdt`` is
``BTC-PERP`` on USD-M and ``BTC`` on spot; COIN-M ``btcusd_perp`` is
``BTCUSD-PERP`` (an inverse contract, a different instrument). ``--symbol-map``
overrides (``btcusdt=XBT-PERP`` or, per market, ``spot:btcusdt=BTC``).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson

from monitor.errors import InputError
from monitor.events.decode import RejectReason
from monitor.events.schema import Tick
from monitor.importers.common import ImportOptions, ImportStats, Item, Skipped, make_tick, mapped
from monitor.sources.files import BadLine, read_lines

MARKETS = ("spot", "usdm", "cm")
_PREFIXES = {"usdm": "usdm", "um": "usdm", "futures": "usdm", "spot": "spot", "cm": "cm"}
_QUOTES = ("usdt", "usdc", "fdusd", "busd", "usd")


def market_of(path: Path, market: str = "auto") -> str:
    """The market of a recording: given, or from its file name prefix."""
    if market != "auto":
        if market not in MARKETS:
            raise InputError(f"unknown market {market!r} (expected one of {', '.join(MARKETS)})")
        return market
    prefix = path.name.lower().split("_", 1)[0]
    if prefix in _PREFIXES:
        return _PREFIXES[prefix]
    raise InputError(
        f"{path}: cannot tell the market from the file name; pass --market spot, usdm or cm"
    )


def default_symbol(stream_symbol: str, market: str) -> str:
    """``btcusdt`` -> ``BTC-PERP`` (usdm) / ``BTC`` (spot); ``btcusd_perp`` -> ``BTCUSD-PERP``."""
    name = stream_symbol.lower()
    perp = name.endswith("_perp")
    name = name.removesuffix("_perp")
    base = name
    for quote in _QUOTES:
        if name.endswith(quote) and len(name) > len(quote):
            base = name[: -len(quote)]
            break
    base = base.upper()
    if market == "spot":
        return base
    if market == "cm" or perp:
        return f"{base}USD-PERP"
    return f"{base}-PERP"


def read(path: Path, opts: ImportOptions, stats: ImportStats) -> Iterator[Item]:
    """Ticks from one recording, in file order (the caller sorts by time)."""
    market = market_of(path, opts.market)
    lines = read_lines(path)
    return _read(lines, str(path), market, opts, stats)


class _Bad(Exception):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _read(
    lines: Iterator[tuple[int, bytes]],
    name: str,
    market: str,
    opts: ImportOptions,
    stats: ImportStats,
) -> Iterator[Item]:
    symbols: dict[str, str] = {}
    offset_ms: int | None = None  # exchange time minus receive time, last seen
    # Book tickers without exchange time that arrive before any offset is known.
    waiting: list[tuple[int, str, float, int]] = []

    def tick(n: int, stream_symbol: str, price: float, ts: int) -> Tick | BadLine:
        symbol = symbols.get(stream_symbol)
        if symbol is None:
            default = default_symbol(stream_symbol, market)
            symbol = symbols[stream_symbol] = mapped(opts, stream_symbol, default, market)
        return make_tick(name, n, symbol, price, ts)

    for n, line in lines:
        stats.lines += 1
        if not line.strip():
            yield Skipped("blank line")
            continue
        try:
            recv_ms, msg = _split(line)
            data = msg.get("data")
            event_ms = data.get("E") if isinstance(data, dict) else None
            if isinstance(event_ms, int) and not isinstance(event_ms, bool):
                offset_ms = event_ms - recv_ms
                for w_n, w_sym, w_price, w_recv in waiting:
                    yield tick(w_n, w_sym, w_price, w_recv + offset_ms)
                waiting.clear()
            parsed = _message(msg, opts)
        except _Bad as bad:
            yield BadLine(name, n, bad.reason, bad.detail)
            continue
        if isinstance(parsed, Skipped):
            yield parsed
            continue
        stream_symbol, price, ts = parsed
        if ts is not None:
            yield tick(n, stream_symbol, price, ts)
        elif offset_ms is not None:
            yield tick(n, stream_symbol, price, recv_ms + offset_ms)
        else:
            waiting.append((n, stream_symbol, price, recv_ms))
    # No message of the file carried an exchange time: the receive time is all there is.
    for w_n, w_sym, w_price, w_recv in waiting:
        yield tick(w_n, w_sym, w_price, w_recv)


def _message(msg: dict[str, Any], opts: ImportOptions) -> Skipped | tuple[str, float, int | None]:
    """``(stream symbol, price, exchange time or None)``, or what is skipped."""
    stream = msg.get("stream")
    if stream is None:
        if "lastUpdateId" in msg:
            return Skipped("depth snapshot")
        raise _Bad(RejectReason.UNKNOWN_TYPE, "neither a stream message nor a depth snapshot")
    data = msg.get("data")
    if not isinstance(stream, str) or not isinstance(data, dict):
        raise _Bad(RejectReason.BAD_TYPE, "`stream` must be a string and `data` an object")
    stream_symbol, _, kind = stream.partition("@")
    kind = kind.split("@", 1)[0]
    if kind.startswith("depth"):
        return Skipped("depth update")
    if kind == "forceOrder":
        return Skipped("forceOrder")
    if kind in ("trade", "aggTrade"):
        if opts.prices == "book":
            return Skipped("trade (--prices book)")
        return stream_symbol, _price(data, "p"), _time(data, "T", "E")
    if kind == "bookTicker":
        if opts.prices == "trade":
            return Skipped("bookTicker (--prices trade)")
        mid = float((_decimal(data, "b") + _decimal(data, "a")) / 2)
        return stream_symbol, mid, _time(data, "T", "E", required=False)
    if kind == "markPrice":
        return stream_symbol, _price(data, "p"), _time(data, "E")
    raise _Bad(RejectReason.UNKNOWN_TYPE, f"unknown stream {stream!r}")


def _split(line: bytes) -> tuple[int, dict[str, Any]]:
    head, sep, body = line.partition(b" ")
    if not sep:
        raise _Bad(RejectReason.MALFORMED_JSON, "expected `<receive time ns> <json>`")
    try:
        recv_ms = int(head) // 1_000_000
    except ValueError:
        raise _Bad(
            RejectReason.BAD_VALUE, f"receive time {head[:30]!r} is not an integer"
        ) from None
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _Bad(RejectReason.MALFORMED_JSON, str(exc)) from None
    if not isinstance(msg, dict):
        raise _Bad(RejectReason.BAD_TYPE, "the message is not a JSON object")
    return recv_ms, msg


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _time(data: dict[str, Any], *keys: str, required: bool = True) -> int | None:
    for key in keys:
        v = data.get(key)
        if v is not None:
            if not _is_int(v):
                raise _Bad(RejectReason.BAD_TYPE, f"`{key}` is {v!r}, not epoch milliseconds")
            ts: int = v
            return ts
    if required:
        raise _Bad(RejectReason.MISSING_FIELD, f"no exchange time ({' or '.join(keys)})")
    return None


def _decimal(data: dict[str, Any], key: str) -> Decimal:
    if key not in data:
        raise _Bad(RejectReason.MISSING_FIELD, f"no `{key}`")
    v = data[key]
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise _Bad(RejectReason.BAD_TYPE, f"`{key}` is {v!r}, not a number")
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        raise _Bad(RejectReason.BAD_VALUE, f"`{key}` is {v!r}, not a number") from None
    if not d.is_finite():
        raise _Bad(RejectReason.NON_FINITE, f"`{key}` is {v!r}")
    return d


def _price(data: dict[str, Any], key: str) -> float:
    return float(_decimal(data, key))
