"""Instruments, brackets and collateral assets, plus the dense tables the
numeric kernels read (one row per instrument, brackets padded to a width).

Maintenance amounts are derived, never configured:
``cum_n = cum_{n-1} + floor_n * (mmr_n - mmr_{n-1})``, ``cum_0 = 0``, which
makes the maintenance margin ``N * mmr - cum`` continuous across floors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Bracket:
    floor: float
    mmr: float
    cum: float


def derive_brackets(pairs: list[tuple[float, float]]) -> tuple[Bracket, ...]:
    """Brackets from ``(floor, mmr)`` pairs, with the maintenance amounts derived.

    The sum is taken in decimal on the numbers as written (``repr`` of a float read
    from TOML is the shortest string that reads back to it), then rounded once to a
    float: ``50000 * (0.005 - 0.004)`` is 50, not the 49.99999999999999 that binary
    arithmetic on the same floats gives, so amounts are right to the cent."""
    out: list[Bracket] = []
    cum = Decimal(0)
    prev_mmr = Decimal(0)
    for i, (floor, mmr) in enumerate(pairs):
        f, m = _decimal(floor), _decimal(mmr)
        if i > 0:
            cum += f * (m - prev_mmr)
        out.append(Bracket(float(floor), float(mmr), float(cum)))
        prev_mmr = m
    return tuple(out)


def _decimal(x: float) -> Decimal:
    return Decimal(x) if isinstance(x, int) else Decimal(repr(float(x)))


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    underlying: str
    brackets: tuple[Bracket, ...]
    # Market-impact model inputs for the cascade (notional that moves the price 100%
    # under the linear model; coefficient of the square-root model).
    depth_usd: float = float("inf")
    impact_k: float = 1.0

    def bracket_for(self, notional: float) -> Bracket:
        """The last bracket whose floor is <= notional."""
        chosen = self.brackets[0]
        for b in self.brackets:
            if b.floor <= notional:
                chosen = b
            else:
                break
        return chosen


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    haircut: float = 0.0
    price: float | None = None  # fixed price, or the value until the first tick
    price_symbol: str | None = None  # valued at the last tick of this symbol
    underlying: str | None = None  # moves with this underlying in stress/distance


@dataclass(frozen=True)
class RiskParams:
    """Everything the book needs to value positions and collateral.

    Tick symbols are numbered: instruments first (ids ``0..n_instruments-1``),
    then symbols that only price collateral.
    """

    instruments: tuple[Instrument, ...]
    assets: tuple[Asset, ...]
    source: str = "<memory>"
    symbols: tuple[str, ...] = field(init=False)
    symbol_id: dict[str, int] = field(init=False)
    asset_id: dict[str, int] = field(init=False)
    underlyings: tuple[str, ...] = field(init=False)
    # dense tables for the kernels
    br_floor: F64 = field(init=False, repr=False)
    br_mmr: F64 = field(init=False, repr=False)
    br_cum: F64 = field(init=False, repr=False)
    br_count: I64 = field(init=False, repr=False)
    asset_haircut: F64 = field(init=False, repr=False)
    asset_fixed_price: F64 = field(init=False, repr=False)
    asset_price_sym: I64 = field(init=False, repr=False)
    sym_underlying: I64 = field(init=False, repr=False)
    asset_underlying: I64 = field(init=False, repr=False)

    def __post_init__(self) -> None:
        symbols = [i.symbol for i in self.instruments]
        for a in self.assets:
            if a.price_symbol is not None and a.price_symbol not in symbols:
                symbols.append(a.price_symbol)
        unders: list[str] = []
        for i in self.instruments:
            if i.underlying not in unders:
                unders.append(i.underlying)
        for a in self.assets:
            if a.underlying is not None and a.underlying not in unders:
                unders.append(a.underlying)
        s = object.__setattr__
        s(self, "symbols", tuple(symbols))
        s(self, "symbol_id", {name: k for k, name in enumerate(symbols)})
        s(self, "asset_id", {a.name: k for k, a in enumerate(self.assets)})
        s(self, "underlyings", tuple(unders))
        n = len(self.instruments)
        width = max((len(i.brackets) for i in self.instruments), default=1)
        floor = np.full((n, width), np.inf)
        mmr = np.zeros((n, width))
        cum = np.zeros((n, width))
        count = np.zeros(n, dtype=np.int64)
        for k, inst in enumerate(self.instruments):
            count[k] = len(inst.brackets)
            for j, b in enumerate(inst.brackets):
                floor[k, j], mmr[k, j], cum[k, j] = b.floor, b.mmr, b.cum
        s(self, "br_floor", floor)
        s(self, "br_mmr", mmr)
        s(self, "br_cum", cum)
        s(self, "br_count", count)
        under_id = {u: k for k, u in enumerate(unders)}
        sym_under = np.full(len(symbols), -1, dtype=np.int64)
        for k, inst in enumerate(self.instruments):
            sym_under[k] = under_id[inst.underlying]
        s(self, "sym_underlying", sym_under)
        s(self, "asset_haircut", np.array([a.haircut for a in self.assets], dtype=np.float64))
        s(
            self,
            "asset_fixed_price",
            np.array(
                [np.nan if a.price is None else a.price for a in self.assets], dtype=np.float64
            ),
        )
        s(
            self,
            "asset_price_sym",
            np.array(
                [
                    -1 if a.price_symbol is None else symbols.index(a.price_symbol)
                    for a in self.assets
                ],
                dtype=np.int64,
            ),
        )
        s(
            self,
            "asset_underlying",
            np.array(
                [-1 if a.underlying is None else under_id[a.underlying] for a in self.assets],
                dtype=np.int64,
            ),
        )

    @property
    def n_instruments(self) -> int:
        return len(self.instruments)

    def instrument(self, symbol: str) -> Instrument:
        return self.instruments[self.symbol_id[symbol]]
