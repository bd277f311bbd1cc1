"""Risk status levels and the margin-ratio thresholds that define them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from monitor.errors import ConfigError


class Status(IntEnum):
    HEALTHY = 0
    WARNING = 1
    CRITICAL = 2
    LIQUIDATABLE = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Margin ratio at which each level starts (HEALTHY below ``warning``)."""

    warning: float = 0.8
    critical: float = 0.9
    liquidatable: float = 1.0

    def __post_init__(self) -> None:
        vals = (self.warning, self.critical, self.liquidatable)
        if not all(math.isfinite(v) and v > 0 for v in vals):
            raise ConfigError(f"status thresholds must be finite and > 0, got {vals}")
        if not self.warning < self.critical < self.liquidatable:
            raise ConfigError(
                f"status thresholds must ascend (warning < critical < liquidatable), got {vals}"
            )

    def as_array(self) -> npt.NDArray[np.float64]:
        return np.array([self.warning, self.critical, self.liquidatable], dtype=np.float64)

    def level(self, margin_ratio: float) -> Status:
        lvl = sum(margin_ratio >= t for t in (self.warning, self.critical, self.liquidatable))
        return Status(lvl)


def margin_ratio(maintenance_margin: float, equity: float, has_positions: bool) -> float:
    """``MM / E``; 0 without open positions; infinite when equity <= 0 with some.

    Whether positions are open is asked, not inferred from ``MM > 0``: the
    incremental sums may leave a rounding residue where an exact figure is 0."""
    if not has_positions:
        return 0.0
    if equity <= 0.0:
        return math.inf
    return maintenance_margin / equity


def margin_ratios(
    maintenance_margin: npt.NDArray[np.float64],
    equity: npt.NDArray[np.float64],
    has_positions: npt.NDArray[np.bool_],
) -> npt.NDArray[np.float64]:
    """:func:`margin_ratio` over arrays."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out: npt.NDArray[np.float64] = np.where(
            ~has_positions, 0.0, np.where(equity <= 0.0, np.inf, maintenance_margin / equity)
        )
    return out
