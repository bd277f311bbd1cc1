"""The alert record and its JSON wire form (one object per Kafka message,
JSONL line or MQTT message; MQTT batches are JSON arrays of them).

Field order is the wire contract's. Non-finite numbers (an infinite margin
ratio when equity is gone) are written as null. Two fields follow the
contract's, each only when it has something to say: ``culprit_sub_accounts``
(the culprits' losses summed by sub-account, largest loss first: the same
aggregation as ``monitor evaluate``), and ``isolated_symbol`` on alerts about
an isolated position (its own unit). The ``culprits`` list itself stays one
entry per losing position, as the contract says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
import orjson

Kind = Literal["margin", "contagion", "stale_price", "cascade"]
Severity = Literal["warning", "critical", "liquidatable"]
State = Literal["firing", "resolved"]

KINDS: tuple[Kind, ...] = ("margin", "contagion", "stale_price", "cascade")
MARKET = "market"  # the account of market-level alerts (stale prices, cascades)


class Trigger(msgspec.Struct, frozen=True, gc=False):
    """The tick that caused the evaluation (or, for a stale price, the last tick)."""

    symbol: str
    price: float | None
    ts: int | None


class Culprit(msgspec.Struct, frozen=True, gc=False):
    """A losing cross position, with the sub-account holding it."""

    symbol: str
    sub_account: str
    unrealized_pnl: float


class SubAccountLoss(msgspec.Struct, frozen=True, gc=False):
    """The culprits of one sub-account, their uPnL summed."""

    sub_account: str
    unrealized_pnl: float


def by_sub_account(culprits: Sequence[Culprit]) -> tuple[SubAccountLoss, ...]:
    """Culprits aggregated by sub-account, largest loss first (ties by name)."""
    if not culprits:
        return ()
    total: dict[str, float] = {}
    for c in culprits:
        total[c.sub_account] = total.get(c.sub_account, 0.0) + c.unrealized_pnl
    return tuple(
        SubAccountLoss(k, v) for k, v in sorted(total.items(), key=lambda kv: (kv[1], kv[0]))
    )


class Victim(msgspec.Struct, frozen=True, gc=False):
    """A healthy cross position a liquidation of the account would force-close."""

    symbol: str
    sub_account: str
    notional: float
    unrealized_pnl: float
    liquidation_price: float | None
    contagion_shift: float | None


class Alert(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    kind: Kind
    severity: Severity
    state: State
    account: str
    ts: int
    emitted_at: int
    margin_ratio: float | None
    equity: float | None
    maintenance_margin: float | None
    trigger: Trigger | None
    culprits: tuple[Culprit, ...]
    victims: tuple[Victim, ...]
    healthy_notional_at_risk: float
    culprit_sub_accounts: tuple[SubAccountLoss, ...] = ()
    isolated_symbol: str | None = None

    def to_json_bytes(self) -> bytes:
        return _ENCODER.encode(self)

    @property
    def firing(self) -> bool:
        return self.state == "firing"


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Alert)
_LIST_DECODER = msgspec.json.Decoder(list[Alert])


def from_json_bytes(data: bytes) -> Alert:
    """Parse one alert (replay, tests, consumers written in Python)."""
    return _DECODER.decode(data)


def batch_from_json_bytes(data: bytes) -> list[Alert]:
    """Parse an MQTT batch message (a JSON array of alerts)."""
    return _LIST_DECODER.decode(data)


def encode_batch(alerts: Sequence[Any]) -> bytes:
    """A JSON array of alerts (the MQTT batch payload)."""
    return b"[" + b",".join(wire_bytes(a) for a in alerts) + b"]"


class AlertBatch(list[Any]):
    """The alerts of one publish, encoded at most once for all the sinks that
    receive them (encoding is most of a sink's cost per alert)."""

    __slots__ = ("_payloads",)

    def __init__(self, alerts: Sequence[Any] = ()) -> None:
        super().__init__(alerts)
        self._payloads: list[bytes] | None = None

    @property
    def payloads(self) -> list[bytes]:
        if self._payloads is None or len(self._payloads) != len(self):
            self._payloads = [wire_bytes(a) for a in self]
        return self._payloads


def payloads(alerts: Sequence[Any]) -> list[bytes]:
    """The wire bytes of ``alerts``, shared when they come as an :class:`AlertBatch`."""
    if isinstance(alerts, AlertBatch):
        return alerts.payloads
    return [wire_bytes(a) for a in alerts]


def wire_bytes(alert: Any) -> bytes:
    """The JSON of an :class:`Alert`, or of another alert type that offers
    ``to_json_bytes()`` or ``to_json()`` (the market-level cascade alert)."""
    if isinstance(alert, Alert):
        return _ENCODER.encode(alert)
    to_bytes = getattr(alert, "to_json_bytes", None)
    if to_bytes is not None:
        return bytes(to_bytes())
    return orjson.dumps(alert.to_json())


def wire_account(alert: Any) -> str:
    """The account an alert is about (``market`` for market-level alerts): its
    Kafka key and the last level of its MQTT topic."""
    account = getattr(alert, "account", None) or getattr(alert, "key", None)
    return str(account) if account else MARKET


def alert_id(account: str, unit: str, kind: str, transition: str, ts: int) -> str:
    """Stable id: the same account, unit, kind, transition and event time always give
    the same id, so consumers can de-duplicate at-least-once deliveries."""
    key = f"{account}\x1f{unit}\x1f{kind}\x1f{transition}\x1f{ts}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()
