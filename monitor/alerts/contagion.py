"""The contagion condition, with hysteresis.

An account at WARNING or worse raises a ``contagion`` alert while its healthy
notional at risk (cross positions with uPnL >= 0) is > 0 and reaches at least
one of the configured conditions: ``contagion_min_notional`` (an amount) OR
``contagion_min_share`` (a share of the account's cross notional). A condition
set to 0 is disabled; with both at 0 any healthy notional at risk counts.

Once firing, the alert holds until the exposure falls clearly below what
fired it, so an exposure hovering at a threshold does not flap:

- the amounts are lowered by ``contagion_hysteresis`` (a share: 0.2 means the
  alert clears below 80 % of the notional and of the share that fire it);
- a victim whose uPnL dips just below 0 still counts as healthy until its
  loss exceeds ``contagion_upnl_band`` of its notional (a position at its
  entry price flips between winner and loser on every tick).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from monitor.alerts.config import AlertsConfig

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


def _reaches(notional: F64, total: F64, scale: float, cfg: AlertsConfig) -> B:
    amount, share = cfg.contagion_min_notional, cfg.contagion_min_share
    if amount <= 0.0 and share <= 0.0:
        return notional > 0.0
    ok = np.zeros(notional.shape[0], dtype=bool)
    if amount > 0.0:
        ok |= notional >= scale * amount
    if share > 0.0:
        ok |= notional >= scale * share * total
    return ok & (notional > 0.0)


def contagion_holds(healthy: F64, near: F64, total: F64, firing: B, cfg: AlertsConfig) -> B:
    """Whether each account's contagion condition holds: the entry condition on
    ``healthy`` for accounts not ``firing``, the lowered one on ``near`` (healthy
    within the uPnL band, see :func:`~monitor.alerts.attribution.cross_exposure`)
    for those firing."""
    enter = _reaches(healthy, total, 1.0, cfg)
    if not firing.any():
        return enter
    stay = _reaches(near, total, 1.0 - cfg.contagion_hysteresis, cfg)
    return np.where(firing, stay, enter)
