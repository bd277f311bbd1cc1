"""Market-impact models: the relative price move a forced flow causes.

Signs. The *forced flow* of a symbol is the net notional the liquidation
engine must trade to close positions, signed as buying: closing a long sells
(negative flow), closing a short buys back (positive flow). Forced selling
pushes the price down, so with ``sold = -flow``:

- linear:      ``dp/p = -sold / depth``                      (= flow / depth)
- square root: ``dp/p = -k * sign(sold) * sqrt(|sold| / depth)``

``depth`` (``depth_usd``) and ``k`` (``impact_k``) are per instrument, from the
instruments file: under the linear model a flow of ``depth_usd`` notional
moves the price by 100%. An infinite depth (the default) means no impact.

The cascade applies the model to the forced flow accumulated over its rounds
(see :mod:`monitor.cascade.engine`). The move is floored at ``-MAX_DROP`` so
prices stay positive (a flow larger than the whole depth would otherwise send
them below zero).
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import numpy.typing as npt

from monitor.errors import ConfigError
from monitor.instruments.model import RiskParams

F64 = npt.NDArray[np.float64]

MAX_DROP = 0.9999


class ImpactModel(StrEnum):
    LINEAR = "linear"
    SQRT = "sqrt"

    @classmethod
    def parse(cls, name: str) -> ImpactModel:
        try:
            return cls(name)
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise ConfigError(f"impact model {name!r} is not one of: {allowed}") from None


def price_moves(model: ImpactModel, flow: F64, depth: F64, k: F64) -> F64:
    """Relative price move per symbol caused by a signed forced flow (see above)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(np.isinf(depth), 0.0, flow / depth)
    move = ratio if model is ImpactModel.LINEAR else k * np.sign(ratio) * np.sqrt(np.abs(ratio))
    out: F64 = np.maximum(move, -MAX_DROP)
    return out


def instrument_depths(params: RiskParams) -> tuple[F64, F64]:
    """``(depth_usd, impact_k)`` per instrument id."""
    depth = np.array([i.depth_usd for i in params.instruments], dtype=np.float64)
    k = np.array([i.impact_k for i in params.instruments], dtype=np.float64)
    return depth, k
