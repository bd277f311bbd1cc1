"""The three wire events, as msgspec structs (typed, validated decoding).

msgspec measured about 2x faster than orjson + hand validation here, and it
validates types and constraints in the same pass.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

# Event times are epoch milliseconds of at most 18 digits: far beyond any real
# clock, and below 2^63, so every ts fits the book's int64 columns (an unbounded
# JSON integer overflowed them, or wrapped negative in compiled code). The replay
# fast tick parser accepts exactly the same range.
MAX_TS_MS = 10**18 - 1

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_TS_MS)]


class Tick(msgspec.Struct, tag="tick", tag_field="type", frozen=True, gc=False):
    symbol: NonEmpty
    price: float
    ts: EpochMs


class PositionEvent(msgspec.Struct, tag="position", tag_field="type", frozen=True, gc=False):
    account: NonEmpty
    symbol: NonEmpty
    qty: float
    entry_price: float
    ts: EpochMs
    margin_mode: Literal["cross", "isolated"] = "cross"
    isolated_margin: float = 0.0
    sub_account: str = ""


class BalanceEvent(msgspec.Struct, tag="balance", tag_field="type", frozen=True, gc=False):
    account: NonEmpty
    asset: NonEmpty
    amount: float
    ts: EpochMs


Event = Tick | PositionEvent | BalanceEvent
AccountEvent = PositionEvent | BalanceEvent


class _UntaggedTick(msgspec.Struct, frozen=True, gc=False):
    """A tick on the `prices` topic, where `type` may be omitted."""

    symbol: NonEmpty
    price: float
    ts: EpochMs
    type: Literal["tick"] = "tick"


def ts_in_range(ts: int) -> bool:
    """Whether ``ts`` is a valid event time (``0 <= ts <= MAX_TS_MS``)."""
    return 0 <= ts <= MAX_TS_MS


def encode(event: Event) -> bytes:
    """The wire bytes of an event (used by generators, `record` and tests)."""
    return msgspec.json.encode(event)
