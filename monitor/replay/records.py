"""Lines of ``monitor record`` files: a Kafka message wrapped around a wire value.

``monitor record`` writes one message per line,
``{"topic":"prices","partition":0,"offset":7,"key":"BTC-PERP","timestamp":...,
"value":{...}}`` (:class:`monitor.sources.kafka.RecordedMessage`). Replay,
``evaluate`` and ``stress`` read such files as they read wire files: each line
is looked at on its own, so recordings and wire files (or both kinds of line
in one file) mix freely.

A line is a record when it is a JSON object with a ``topic`` key (no wire
event has one). Its value is decoded as the daemon decodes that topic: on the
prices topic ``type`` may be omitted, anywhere else the value is a wire event
of any type. A value that was not JSON (``value_b64``) is decoded from its
bytes, so it is rejected the way the daemon would reject it; a record
without a value (a tombstone) is rejected as missing its value.
"""

from __future__ import annotations

import base64
import binascii

import msgspec

from monitor.events.decode import Decoder, Rejection, RejectReason
from monitor.events.schema import Event
from monitor.sources.files import event_time

DEFAULT_PRICES_TOPIC = "prices"


class _Wrapped(msgspec.Struct):
    topic: str
    value: msgspec.Raw = msgspec.Raw()
    value_b64: str | None = None
    timestamp: int | None = None
    offset: int | None = None


_wrapped = msgspec.json.Decoder(_Wrapped)
_keys = msgspec.json.Decoder(dict[str, msgspec.Raw])


class RecordDecoder:
    """Decodes record lines, given the name of the prices topic."""

    def __init__(self, decoder: Decoder, prices_topic: str = DEFAULT_PRICES_TOPIC) -> None:
        self.decoder = decoder
        self.prices_topic = prices_topic

    def decode(self, raw: bytes) -> tuple[Event | Rejection, int | None] | None:
        """``None`` when ``raw`` is not a record line (a wire line, or not JSON);
        else the decoded value (or why it was rejected) and its event time
        (the value's ``ts``, else the message timestamp; None if neither)."""
        if b'"topic"' not in raw:
            return None
        try:
            rec = _wrapped.decode(raw)
        except msgspec.ValidationError as exc:
            if not _is_record(raw):
                return None
            return Rejection(RejectReason.BAD_TYPE, f"record line: {exc}"), None
        except msgspec.DecodeError:
            return None  # not JSON: the wire decoder says how
        where = f"{rec.topic} record" + ("" if rec.offset is None else f" at offset {rec.offset}")
        if rec.value_b64 is not None:
            try:
                value = base64.b64decode(rec.value_b64, validate=True)
            except (binascii.Error, ValueError):
                return Rejection(RejectReason.BAD_VALUE, f"{where}: value_b64 is not base64"), (
                    rec.timestamp
                )
        elif len(rec.value):
            value = bytes(rec.value)
        else:
            return Rejection(RejectReason.MISSING_FIELD, f"{where}: no value (a tombstone)"), (
                rec.timestamp
            )
        if rec.topic == self.prices_topic:
            ev: Event | Rejection = self.decoder.decode_price(value)
        else:
            ev = self.decoder.decode_event(value)
        if isinstance(ev, Rejection):
            t = event_time(value)
            return Rejection(ev.reason, f"{where}: {ev.detail}"), (
                t if t is not None else rec.timestamp
            )
        return ev, ev.ts

    def decode_line(self, raw: bytes) -> tuple[Event | Rejection, int | None]:
        """Any line: a record, else a wire event (time None when unreadable)."""
        out = self.decode(raw)
        if out is not None:
            return out
        ev = self.decoder.decode_event(raw)
        if isinstance(ev, Rejection):
            return ev, event_time(raw)
        return ev, ev.ts


def _is_record(raw: bytes) -> bool:
    """A JSON object with a ``topic`` key (whatever its fields hold)."""
    try:
        keys = _keys.decode(raw)
    except msgspec.DecodeError:
        return False
    return "topic" in keys


__all__ = ["DEFAULT_PRICES_TOPIC", "RecordDecoder"]
