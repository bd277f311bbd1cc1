"""Load and strictly validate ``instruments.toml``.

Every problem is reported with the file, the key and what is wrong; unknown
keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from monitor.errors import ConfigError
from monitor.instruments.model import Asset, Instrument, RiskParams, derive_brackets

_ASSET_KEYS = {"price", "price_symbol", "haircut", "underlying"}
_INSTRUMENT_KEYS = {"underlying", "brackets", "depth_usd", "impact_k"}


def default_instruments_path() -> Path:
    """The instruments file shipped with the package (a copy of config/instruments.toml)."""
    return Path(str(resources.files("monitor") / "defaults" / "instruments.toml"))


def load_instruments(path: str | Path | None = None) -> RiskParams:
    p = Path(path) if path is not None else default_instruments_path()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read instruments file: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return parse_instruments(data, source=str(p))


def _num(src: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{src}: {key}: expected a number, got {value!r}")
    f = float(value)
    if not math.isfinite(f):
        raise ConfigError(f"{src}: {key}: must be finite, got {value!r}")
    return f


def _table(src: str, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{src}: {key}: expected a table")
    return value


def _check_keys(src: str, where: str, table: dict[str, Any], allowed: set[str]) -> None:
    for k in table:
        if k not in allowed:
            raise ConfigError(
                f"{src}: {where}.{k}: unknown key (allowed: {', '.join(sorted(allowed))})"
            )


def _parse_asset(src: str, name: str, t: dict[str, Any]) -> Asset:
    where = f"assets.{name}"
    _check_keys(src, where, t, _ASSET_KEYS)
    price = t.get("price")
    sym = t.get("price_symbol")
    if price is None and sym is None:
        raise ConfigError(f"{src}: {where}: needs `price` or `price_symbol`")
    fixed = None if price is None else _num(src, f"{where}.price", price)
    if fixed is not None and fixed <= 0:
        raise ConfigError(f"{src}: {where}.price: must be > 0, got {price!r}")
    if sym is not None and (not isinstance(sym, str) or not sym):
        raise ConfigError(f"{src}: {where}.price_symbol: expected a non-empty string")
    haircut = _num(src, f"{where}.haircut", t.get("haircut", 0.0))
    if not 0.0 <= haircut < 1.0:
        raise ConfigError(f"{src}: {where}.haircut: must be in [0, 1), got {haircut!r}")
    underlying = t.get("underlying", name if sym is not None else None)
    if underlying is not None and (not isinstance(underlying, str) or not underlying):
        raise ConfigError(f"{src}: {where}.underlying: expected a non-empty string")
    return Asset(name, haircut, fixed, sym, underlying)


def _parse_instrument(src: str, symbol: str, t: dict[str, Any]) -> Instrument:
    where = f"instruments.{symbol}"
    _check_keys(src, where, t, _INSTRUMENT_KEYS)
    underlying = t.get("underlying")
    if not isinstance(underlying, str) or not underlying:
        raise ConfigError(f"{src}: {where}.underlying: required, a non-empty string")
    raw = t.get("brackets")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{src}: {where}.brackets: required, a list of [floor, mmr] pairs")
    pairs: list[tuple[float, float]] = []
    for i, item in enumerate(raw):
        key = f"{where}.brackets[{i}]"
        if not isinstance(item, list) or len(item) != 2:
            raise ConfigError(f"{src}: {key}: expected [notional floor, maintenance rate]")
        floor = _num(src, key, item[0])
        mmr = _num(src, key, item[1])
        if i == 0 and floor != 0:
            raise ConfigError(f"{src}: {key}: the first floor must be 0, got {item[0]!r}")
        if i > 0 and floor <= pairs[-1][0]:
            raise ConfigError(
                f"{src}: {key}: floors must be ascending ({floor} after {pairs[-1][0]})"
            )
        if not 0.0 < mmr < 1.0:
            raise ConfigError(f"{src}: {key}: maintenance rate must be in (0, 1), got {item[1]!r}")
        pairs.append((floor, mmr))
    depth = (
        _num(src, f"{where}.depth_usd", t.get("depth_usd", math.inf))
        if "depth_usd" in t
        else math.inf
    )
    if depth <= 0:
        raise ConfigError(f"{src}: {where}.depth_usd: must be > 0, got {depth!r}")
    k = _num(src, f"{where}.impact_k", t.get("impact_k", 1.0))
    if k < 0:
        raise ConfigError(f"{src}: {where}.impact_k: must be >= 0, got {k!r}")
    return Instrument(symbol, underlying, derive_brackets(pairs), depth, k)


def parse_instruments(data: dict[str, Any], source: str = "<memory>") -> RiskParams:
    _check_keys(source, "<top>", data, {"assets", "instruments"})
    assets_t = _table(source, "assets", data.get("assets", {}))
    instr_t = _table(source, "instruments", data.get("instruments", {}))
    if not instr_t:
        raise ConfigError(f"{source}: instruments: at least one instrument is required")
    assets = [
        _parse_asset(source, n, _table(source, f"assets.{n}", t)) for n, t in assets_t.items()
    ]
    instruments = [
        _parse_instrument(source, s, _table(source, f"instruments.{s}", t))
        for s, t in instr_t.items()
    ]
    names = {i.symbol for i in instruments}
    for a in assets:
        if a.name in names:
            raise ConfigError(f"{source}: assets.{a.name}: clashes with an instrument symbol")
    return RiskParams(tuple(instruments), tuple(assets), source=source)
