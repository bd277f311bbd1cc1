"""Wire schema (DESIGN.md section 3) and the one decoder for Kafka and files."""

from monitor.events.decode import Decoder, Rejection, RejectReason
from monitor.events.schema import BalanceEvent, Event, PositionEvent, Tick

__all__ = [
    "BalanceEvent",
    "Decoder",
    "Event",
    "PositionEvent",
    "RejectReason",
    "Rejection",
    "Tick",
]
