"""From-scratch, fully vectorised evaluation of every position and account.

The baseline the incremental tick path is measured against in ``monitor
bench`` (``MarginBook.recompute``), and the valuation of collateral used by
the exact re-derivation (``MarginBook.resync``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from monitor.instruments.model import RiskParams

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class PositionFigures:
    upnl: F64
    mm: F64
    bracket: I64
    notional: F64


def position_figures(
    params: RiskParams, sym: npt.NDArray[np.integer], qty: F64, entry: F64, sym_price: F64
) -> PositionFigures:
    """uPnL, bracket and maintenance margin of positions at the current marks
    (entry price where a symbol has no tick yet)."""
    mark = sym_price[sym]
    mark = np.where(np.isnan(mark), entry, mark)
    notional = np.abs(qty) * mark
    upnl = qty * (mark - entry)
    # bracket = number of floors (after the first) at or below the notional, one
    # bracket column at a time (a (positions, width) gather would dominate memory)
    bracket = np.zeros(sym.shape[0], dtype=np.int64)
    for k in range(1, params.br_floor.shape[1]):
        bracket += params.br_floor[sym, k] <= notional
    mm = notional * params.br_mmr[sym, bracket] - params.br_cum[sym, bracket]
    return PositionFigures(upnl, mm, bracket, notional)


def asset_prices(params: RiskParams, sym_price: F64) -> F64:
    """Value of one unit of each asset: its tick price, else its configured price,
    else 0 (collateral nobody has priced yet counts for nothing)."""
    fixed = np.nan_to_num(params.asset_fixed_price, nan=0.0)
    ps = params.asset_price_sym
    out = fixed.copy()
    has = ps >= 0
    ticked = np.zeros_like(has)
    ticked[has] = ~np.isnan(sym_price[ps[has]])
    out[ticked] = sym_price[ps[ticked]]
    return out


def wallet_balances(params: RiskParams, bal: F64, sym_price: F64) -> F64:
    """Haircut collateral value per account; ``bal`` is ``(assets, accounts)``."""
    w = asset_prices(params, sym_price) * (1.0 - params.asset_haircut)
    out: F64 = w @ bal
    return out
