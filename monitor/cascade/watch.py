"""The ``cascade`` alert: fires when a standard shock's cascade crosses a
configured threshold (amplification or notional liquidated), once per
crossing, never once per evaluation.

Per scenario a two-state machine, ``calm -> breached`` when either figure is
at or above its threshold, ``breached -> calm`` (a ``resolved`` alert) only
when both are below ``clear_ratio`` times their thresholds: the same
hysteresis as the account levels, so a figure hovering at the threshold
does not flap. The alert id derives from (scenario, transition, event time),
so a re-delivered alert can be de-duplicated.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from monitor.cascade.engine import CascadeResult
from monitor.risk.report import finite

State = Literal["breached", "resolved"]


@dataclass(frozen=True, slots=True)
class CascadeAlert:
    shock: str
    state: State
    amplification: float | None
    liquidated_notional: float
    accounts_liquidated: int
    bad_debt: float
    amplification_threshold: float
    notional_threshold: float
    ts: int  # event time of the book the cascade ran on (epoch ms)

    @property
    def kind(self) -> str:
        return "cascade"

    @property
    def key(self) -> str:
        """Kafka key of market-level alerts."""
        return "market"

    @property
    def alert_id(self) -> str:
        raw = f"cascade|{self.shock}|{self.state}|{self.ts}".encode()
        return hashlib.sha256(raw).hexdigest()[:24]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.alert_id,
            "type": self.kind,
            "key": self.key,
            "shock": self.shock,
            "state": self.state,
            "amplification": finite(self.amplification),
            "liquidated_notional": self.liquidated_notional,
            "accounts_liquidated": self.accounts_liquidated,
            "bad_debt": self.bad_debt,
            "amplification_threshold": self.amplification_threshold,
            "notional_threshold": self.notional_threshold,
            "ts": self.ts,
        }


class CascadeWatch:
    """Remembers, per scenario, whether its cascade is past a threshold."""

    def __init__(
        self,
        amplification_threshold: float,
        notional_threshold: float,
        *,
        clear_ratio: float = 0.9,
    ) -> None:
        if not 0.0 < clear_ratio <= 1.0:
            raise ValueError("clear_ratio must be in (0, 1]")
        self.amplification_threshold = amplification_threshold
        self.notional_threshold = notional_threshold
        self.clear_ratio = clear_ratio
        self._breached: dict[str, bool] = {}

    def breached(self, shock: str) -> bool:
        return self._breached.get(shock, False)

    def observe(self, shock: str, result: CascadeResult, ts: int) -> CascadeAlert | None:
        """The alert for this evaluation, if it is a transition."""
        amp = result.amplification
        amp_v = 0.0 if amp is None else amp
        notional = result.notional_liquidated
        was = self.breached(shock)
        if not was:
            now = amp_v >= self.amplification_threshold or notional >= self.notional_threshold
        else:
            r = self.clear_ratio
            now = not (
                amp_v < r * self.amplification_threshold and notional < r * self.notional_threshold
            )
        self._breached[shock] = now
        if now == was:
            return None
        return CascadeAlert(
            shock=shock,
            state="breached" if now else "resolved",
            amplification=amp,
            liquidated_notional=notional,
            accounts_liquidated=result.accounts_liquidated,
            bad_debt=result.bad_debt,
            amplification_threshold=self.amplification_threshold,
            notional_threshold=self.notional_threshold,
            ts=ts,
        )
