"""Every rejection reason of the wire decoder, with the field it names."""

from __future__ import annotations

import pytest

from monitor.book import MarginBook
from monitor.book.layout import P_ENTRY, P_QTY
from monitor.events import (
    BalanceEvent,
    Decoder,
    Event,
    PositionEvent,
    Rejection,
    RejectReason,
    Tick,
)
from monitor.events.schema import MAX_TS_MS
from monitor.instruments import RiskParams

POS = (
    b'{"type":"position","account":"A1","symbol":"BTC-PERP","qty":-1.5,"entry_price":65000.0,'
    b'"ts":1700000000200,"margin_mode":"cross","isolated_margin":0.0,"sub_account":"desk-1"}'
)


@pytest.fixture
def decoder(small_params: RiskParams) -> Decoder:
    return Decoder(small_params)


def test_the_three_wire_events_decode(decoder: Decoder) -> None:
    assert decoder.decode_event(
        b'{"type":"tick","symbol":"BTC-PERP","price":64000.5,"ts":1}'
    ) == Tick("BTC-PERP", 64000.5, 1)
    p = decoder.decode_event(POS)
    assert isinstance(p, PositionEvent)
    assert (p.qty, p.sub_account, p.margin_mode) == (-1.5, "desk-1", "cross")
    b = decoder.decode_event(b'{"type":"balance","account":"A1","asset":"USDT","amount":-5,"ts":3}')
    assert b == BalanceEvent("A1", "USDT", -5.0, 3)


def test_defaults_of_optional_position_fields(decoder: Decoder) -> None:
    p = decoder.decode_event(
        b'{"type":"position","account":"A","symbol":"ETH-PERP","qty":1,"entry_price":2,"ts":0}'
    )
    assert isinstance(p, PositionEvent)
    assert (p.margin_mode, p.isolated_margin, p.sub_account) == ("cross", 0.0, "")


def test_prices_topic_accepts_ticks_without_a_type(decoder: Decoder) -> None:
    assert decoder.decode_price(b'{"symbol":"BTC","price":3.5,"ts":9}') == Tick("BTC", 3.5, 9)


@pytest.mark.parametrize(
    ("raw", "reason", "mentions"),
    [
        (b'{"type":"tick","symbol":"BTC-PERP",', RejectReason.MALFORMED_JSON, "not valid JSON"),
        (b'{"type":"tick","symbol":"BTC-PERP","ts":1}', RejectReason.MISSING_FIELD, "price"),
        (
            b'{"type":"tick","symbol":"BTC-PERP","price":"1","ts":1}',
            RejectReason.BAD_TYPE,
            "$.price",
        ),
        (b'{"type":"tick","symbol":"BTC-PERP","price":1,"ts":1.5}', RejectReason.BAD_TYPE, "$.ts"),
        (b"[1,2]", RejectReason.BAD_TYPE, "object"),
        (b'{"type":"tick","symbol":"BTC-PERP","price":1,"ts":-1}', RejectReason.BAD_VALUE, "$.ts"),
        # beyond 18 digits, beyond int64 and uint64: never an overflow
        (
            b'{"type":"tick","symbol":"BTC-PERP","price":1,"ts":1000000000000000000}',
            RejectReason.BAD_VALUE,
            "ts must be epoch milliseconds",
        ),
        (
            b'{"type":"tick","symbol":"BTC-PERP","price":1,"ts":9223372036854775808}',
            RejectReason.BAD_VALUE,
            "$.ts",
        ),
        (POS.replace(b"1700000000200", b"18446744073709551616"), RejectReason.BAD_VALUE, "$.ts"),
        (
            b'{"type":"balance","account":"A","asset":"USDT","amount":1,"ts":99999999999999999999999}',
            RejectReason.BAD_VALUE,
            "$.ts",
        ),
        (
            POS.replace(b'"cross"', b'"portfolio"'),
            RejectReason.BAD_VALUE,
            "margin_mode",
        ),
        (b'{"type":"order","id":1}', RejectReason.UNKNOWN_TYPE, "order"),
        (b'{"type":"tick","symbol":"BTC-PERP","price":NaN,"ts":1}', RejectReason.NON_FINITE, "NaN"),
        (
            b'{"type":"tick","symbol":"BTC-PERP","price":1e999,"ts":1}',
            RejectReason.NON_FINITE,
            "price",
        ),
        (
            b'{"type":"tick","symbol":"BTC-PERP","price":0,"ts":1}',
            RejectReason.NON_POSITIVE_PRICE,
            "BTC-PERP",
        ),
        (
            b'{"type":"tick","symbol":"DOGE-PERP","price":1,"ts":1}',
            RejectReason.UNKNOWN_SYMBOL,
            "DOGE-PERP",
        ),
        (POS.replace(b"BTC-PERP", b"BTC"), RejectReason.UNKNOWN_SYMBOL, "'BTC'"),
        (POS.replace(b"65000.0", b"-1"), RejectReason.NON_POSITIVE_PRICE, "entry_price"),
        (
            POS.replace(b'"isolated_margin":0.0', b'"isolated_margin":-3'),
            RejectReason.BAD_VALUE,
            "isolated_margin",
        ),
        (
            b'{"type":"balance","account":"A","asset":"XRP","amount":1,"ts":1}',
            RejectReason.UNKNOWN_ASSET,
            "XRP",
        ),
        (
            b'{"type":"balance","account":"","asset":"USDT","amount":1,"ts":1}',
            RejectReason.BAD_VALUE,
            "account",
        ),
    ],
)
def test_bad_input_is_rejected_with_a_reason_naming_the_problem(
    decoder: Decoder, raw: bytes, reason: RejectReason, mentions: str
) -> None:
    r = decoder.decode_event(raw)
    assert isinstance(r, Rejection)
    assert r.reason is reason
    assert mentions in r.detail


def test_stale_events_are_rejected_by_the_book(small_params: RiskParams) -> None:
    book = MarginBook(small_params)
    assert book.apply(Tick("BTC-PERP", 10.0, 5)) is None
    r = book.apply(Tick("BTC-PERP", 11.0, 4))
    assert isinstance(r, Rejection) and r.reason is RejectReason.STALE
    assert book.sym_price[0] == 10.0  # the stale price did not replace the state
    assert book.apply(BalanceEvent("A", "USDT", 5.0, 9)) is None
    r = book.apply(BalanceEvent("A", "USDT", 6.0, 8))
    assert isinstance(r, Rejection) and r.reason is RejectReason.STALE and "USDT" in r.detail
    assert book.wallet_balance[0] == 5.0


@pytest.mark.parametrize("conflate", [None, True, False])
def test_stale_positions_are_rejected_against_the_position_and_its_close(
    small_params: RiskParams, conflate: bool | None
) -> None:
    """A position older than the one held, or than the close that ended it, is stale."""
    book = MarginBook(small_params)
    events: list[Event] = [
        PositionEvent("A", "ETH-PERP", 2.0, 10.0, 5),
        PositionEvent("A", "ETH-PERP", 3.0, 11.0, 4),  # older than the position held
        PositionEvent("A", "ETH-PERP", 0.0, 0.0, 7),  # close
        PositionEvent("A", "ETH-PERP", 1.0, 12.0, 6),  # older than the close
        PositionEvent("A", "ETH-PERP", 4.0, 13.0, 7),  # as new as the close: accepted
    ]
    if conflate is None:
        out = [(i, r) for i, ev in enumerate(events) if (r := book.apply(ev)) is not None]
    else:
        out = book.apply_batch(events, conflate=conflate)
    assert [i for i, _ in out] == [1, 3]
    for _, r in out:
        assert r.reason is RejectReason.STALE
        assert "position" in r.detail and "ETH-PERP" in r.detail and "account A" in r.detail
    (slot,) = book.positions_of(0)
    assert (book.pos_f[P_QTY, slot], book.pos_f[P_ENTRY, slot]) == (4.0, 13.0)


OUT_OF_RANGE = [2**64, 2**63, 2**63 - 1, MAX_TS_MS + 1, -1]


def _events_at(ts: int) -> list[Event]:
    return [
        Tick("BTC-PERP", 11.0, ts),
        PositionEvent("A", "BTC-PERP", 2.0, 10.0, ts),
        BalanceEvent("A", "USDT", 7.0, ts),
    ]


def _assert_untouched(book: MarginBook) -> None:
    assert book.sym_price[0] == 10.0 and int(book.sym_ts[0]) == 1
    assert book.wallet_balance[0] == 5.0
    slot = book.slot_of("A")
    assert slot is not None and book.positions_of(slot) == []


@pytest.mark.parametrize("ts", OUT_OF_RANGE)
def test_an_out_of_range_ts_is_a_bad_value_one_event_at_a_time(
    small_params: RiskParams, ts: int
) -> None:
    """Events built in code skip the decoder: the book bounds ts itself."""
    book = MarginBook(small_params)
    assert book.apply_batch([Tick("BTC-PERP", 10.0, 1), BalanceEvent("A", "USDT", 5.0, 1)]) == []
    for ev in _events_at(ts):
        r = book.apply(ev)
        assert isinstance(r, Rejection) and r.reason is RejectReason.BAD_VALUE, ev
        assert "ts must be epoch milliseconds" in r.detail and str(ts) in r.detail
    _assert_untouched(book)


@pytest.mark.parametrize("ts", OUT_OF_RANGE)
@pytest.mark.parametrize("conflate", [True, False])
def test_an_out_of_range_ts_is_a_bad_value_in_a_batch(
    small_params: RiskParams, ts: int, conflate: bool
) -> None:
    book = MarginBook(small_params)
    book.apply_batch([Tick("BTC-PERP", 10.0, 1), BalanceEvent("A", "USDT", 5.0, 1)])
    rejected = book.apply_batch([*_events_at(ts), Tick("ETH-PERP", 3.0, 2)], conflate=conflate)
    assert [i for i, _ in rejected] == [0, 1, 2]
    assert all(r.reason is RejectReason.BAD_VALUE and "ts" in r.detail for _, r in rejected)
    _assert_untouched(book)
    assert book.sym_price[1] == 3.0  # the good event of the batch still applied
