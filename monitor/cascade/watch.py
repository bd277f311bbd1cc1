"""The ``cascade`` alert: fires when a standard shock's cascade crosses a
configured threshold (amplification or notional liquidated), once per
crossing, never once per evaluation.

Per scenario a two-state machine, ``calm -> breached`` (a ``firing`` alert)
when either figure is at or above its threshold, ``breached -> calm`` (a
``resolved`` alert) only when both are below ``clear_ratio`` times their
thresholds: the same hysteresis as the account levels, so a figure hovering
at the threshold does not flap.

The alert speaks the wire contract of every other alert
(:mod:`monitor.alerts.model`): ``kind`` ``cascade``, ``severity`` ``critical``,
``state`` ``firing``/``resolved``, ``account`` ``market``, a stable ``id`` from
(scenario, transition, event time) so a re-delivered alert can be
de-duplicated, the account-level fields empty, ``healthy_notional_at_risk``
the healthy notional the cascade would destroy, and the cascade's own figures
under ``cascade``. ``emitted_at`` is stamped when the alert engine admits it
(nothing here reads a clock; until then it is the event time).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from monitor.alerts.model import MARKET, alert_id
from monitor.risk.report import finite

State = Literal["firing", "resolved"]
SEVERITY = "critical"


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
    healthy_notional_destroyed: float = 0.0
    emitted_at: int | None = None  # processing time, stamped by AlertEngine.admit

    @property
    def kind(self) -> str:
        return "cascade"

    @property
    def severity(self) -> str:
        return SEVERITY

    @property
    def account(self) -> str:
        """Market-level: the Kafka key and the last MQTT topic level."""
        return MARKET

    @property
    def firing(self) -> bool:
        return self.state == "firing"

    @property
    def id(self) -> str:
        before, after = ("healthy", SEVERITY) if self.firing else (SEVERITY, "healthy")
        transition = f"{before}->{after}:{SEVERITY}:{self.state}"
        return alert_id(MARKET, f"cascade:{self.shock}", "cascade", transition, self.ts)

    def stamped(self, now_ms: int) -> CascadeAlert:
        """The same alert with its processing time (``emitted_at``) set."""
        return dataclasses.replace(self, emitted_at=now_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "severity": SEVERITY,
            "state": self.state,
            "account": MARKET,
            "ts": self.ts,
            "emitted_at": self.ts if self.emitted_at is None else self.emitted_at,
            "margin_ratio": None,
            "equity": None,
            "maintenance_margin": None,
            "trigger": None,
            "culprits": [],
            "victims": [],
            "healthy_notional_at_risk": self.healthy_notional_destroyed,
            "cascade": {
                "shock": self.shock,
                "amplification": finite(self.amplification),
                "liquidated_notional": self.liquidated_notional,
                "accounts_liquidated": self.accounts_liquidated,
                "bad_debt": self.bad_debt,
                "amplification_threshold": self.amplification_threshold,
                "notional_threshold": self.notional_threshold,
            },
        }

    def to_json_bytes(self) -> bytes:
        return orjson.dumps(self.to_json())


class CascadeFigures(Protocol):
    """What a watch reads of a cascade: the exact one (:class:`CascadeResult`) or
    the group view's (:class:`~monitor.cascade.group.GroupCascade`)."""

    @property
    def amplification(self) -> float | None: ...

    @property
    def notional_liquidated(self) -> float: ...

    @property
    def accounts_liquidated(self) -> int: ...

    @property
    def bad_debt(self) -> float: ...

    @property
    def healthy_notional_destroyed(self) -> float: ...


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

    def reset(self) -> None:
        """Forget every scenario's state (the next crossing alerts again)."""
        self._breached.clear()

    def breached(self, shock: str) -> bool:
        return self._breached.get(shock, False)

    def observe(self, shock: str, result: CascadeFigures, ts: int) -> CascadeAlert | None:
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
            state="firing" if now else "resolved",
            amplification=amp,
            liquidated_notional=notional,
            accounts_liquidated=result.accounts_liquidated,
            bad_debt=result.bad_debt,
            amplification_threshold=self.amplification_threshold,
            notional_threshold=self.notional_threshold,
            ts=ts,
            healthy_notional_destroyed=result.healthy_notional_destroyed,
        )
