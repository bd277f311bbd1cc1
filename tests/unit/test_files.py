"""Reading recorded streams: compression, JSONL, CSV ticks, merge, time window."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from monitor.errors import InputError
from monitor.events import Decoder, Rejection, RejectReason, Tick
from monitor.instruments.load import load_instruments
from monitor.sources.files import (
    BadLine,
    Line,
    Record,
    event_time,
    merge_by_event_time,
    parse_time_ms,
    read_csv_ticks,
    read_jsonl,
    read_lines,
    read_recording,
    within,
)

TICK_1 = b'{"type":"tick","symbol":"BTC-PERP","price":64000.5,"ts":1700000000123}'
TICK_2 = b'{"type":"tick","symbol":"BTC","price":64001.0,"ts":1700000000200}'
BALANCE = b'{"type":"balance","account":"A1","asset":"USDT","amount":10000.0,"ts":1700000000300}'


def _write(path: Path, data: bytes) -> Path:
    name = path.name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    elif name.endswith(".zst"):
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def decoder() -> Decoder:
    return Decoder(load_instruments())


# -- opening -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["s.jsonl", "s.jsonl.gz", "s.jsonl.zst"])
def test_plain_gzip_and_zstd_files_read_as_the_same_numbered_lines(
    tmp_path: Path, name: str
) -> None:
    path = _write(tmp_path / name, TICK_1 + b"\n" + TICK_2 + b"\n")
    assert list(read_lines(path)) == [(1, TICK_1), (2, TICK_2)]


def test_compression_is_recognised_by_content_not_by_file_name(tmp_path: Path) -> None:
    gz = tmp_path / "misnamed.jsonl"
    gz.write_bytes(gzip.compress(TICK_1 + b"\n"))
    zst = tmp_path / "misnamed.txt"
    zst.write_bytes(zstandard.ZstdCompressor().compress(TICK_2 + b"\n"))
    assert list(read_lines(gz)) == [(1, TICK_1)]
    assert list(read_lines(zst)) == [(1, TICK_2)]


def test_multi_frame_zstd_files_read_across_frames(tmp_path: Path) -> None:
    path = tmp_path / "frames.jsonl.zst"
    c = zstandard.ZstdCompressor()
    path.write_bytes(c.compress(TICK_1 + b"\n") + c.compress(TICK_2 + b"\n"))
    assert [raw for _, raw in read_lines(path)] == [TICK_1, TICK_2]


def test_crlf_line_ends_and_a_missing_final_newline_are_handled(tmp_path: Path) -> None:
    path = _write(tmp_path / "crlf.jsonl", TICK_1 + b"\r\n" + TICK_2)
    assert list(read_lines(path)) == [(1, TICK_1), (2, TICK_2)]


def test_a_missing_file_raises_input_error_naming_it_before_any_iteration(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nope.jsonl.zst"
    with pytest.raises(InputError, match=r"nope\.jsonl\.zst"):
        read_jsonl(missing)


def test_a_directory_is_an_unreadable_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=re.escape(str(tmp_path))):
        read_lines(tmp_path)


def test_a_truncated_gzip_raises_input_error_naming_the_file_and_last_good_line(
    tmp_path: Path,
) -> None:
    data = gzip.compress((TICK_1 + b"\n") * 2000)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.jsonl\.gz: corrupt or truncated after line \d+"):
        list(read_lines(path))


def test_a_corrupt_gzip_body_raises_input_error_not_a_zlib_error(tmp_path: Path) -> None:
    data = bytearray(gzip.compress((TICK_1 + b"\n") * 2000))
    for i in range(30, 60):  # garble the deflate stream just after the header
        data[i] ^= 0xFF
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"bad\.jsonl\.gz: corrupt or truncated after line \d+"):
        list(read_lines(path))


def test_a_truncated_zstd_file_raises_input_error_instead_of_ending_quietly(
    tmp_path: Path,
) -> None:
    data = zstandard.ZstdCompressor().compress((TICK_1 + b"\n") * 2000)
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(data[:-20])
    with pytest.raises(InputError, match=r"cut\.jsonl\.zst: corrupt or truncated after line"):
        list(read_lines(path))


def test_a_corrupt_zstd_file_raises_input_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 64)
    with pytest.raises(InputError, match=r"bad\.jsonl\.zst"):
        list(read_lines(path))


# -- JSONL -----------------------------------------------------------------------


def test_jsonl_yields_source_line_number_and_raw_bytes_skipping_blank_lines(
    tmp_path: Path,
) -> None:
    path = _write(tmp_path / "e.jsonl.gz", TICK_1 + b"\n\n   \n" + BALANCE + b"\n")
    assert list(read_jsonl(path)) == [
        Line(str(path), 1, TICK_1),
        Line(str(path), 4, BALANCE),
    ]
    assert next(read_jsonl(path, source="feed")) == ("feed", 1, TICK_1)


def test_jsonl_passes_malformed_lines_on_for_the_decoder_to_reject_with_their_number(
    tmp_path: Path, decoder: Decoder
) -> None:
    path = _write(tmp_path / "e.jsonl", TICK_1 + b"\n{not json\n")
    lines = list(read_jsonl(path))
    assert lines[1].line_no == 2
    rejected = decoder.decode_event(lines[1].raw)
    assert isinstance(rejected, Rejection)
    assert rejected.reason is RejectReason.MALFORMED_JSON


# -- CSV ticks -------------------------------------------------------------------


def test_csv_ts_symbol_price_rows_become_tick_bytes_the_decoder_accepts(
    tmp_path: Path, decoder: Decoder
) -> None:
    path = _write(
        tmp_path / "t.csv.zst", b"ts,symbol,price\n1700000000123,BTC-PERP,64000.5\n\n1,BTC,2.0\n"
    )
    recs = list(read_csv_ticks(path))
    assert [(r.source, r.line_no) for r in recs] == [(str(path), 2), (str(path), 4)]
    assert all(isinstance(r, Line) for r in recs)
    first = recs[0]
    assert isinstance(first, Line)
    assert decoder.decode_event(first.raw) == Tick("BTC-PERP", 64000.5, 1700000000123)


def test_csv_columns_may_come_in_any_order_with_extra_columns_ignored(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", b"symbol,qty,price,ts\nETH-PERP,3,2500.25,42\n")
    (rec,) = read_csv_ticks(path)
    assert isinstance(rec, Line)
    assert rec.raw == b'{"type":"tick","symbol":"ETH-PERP","price":2500.25,"ts":42}'


@pytest.mark.parametrize("header", [b"timestamp_ms,price", b"ts,price"])
def test_a_single_symbol_csv_takes_its_symbol_from_the_argument(
    tmp_path: Path, header: bytes
) -> None:
    # The first rows of the 2021-05-19 crash file, as upstream wrote them.
    path = _write(tmp_path / "c.csv.gz", header + b"\n1621430420000,35675.06000000\n")
    (rec,) = read_csv_ticks(path, symbol="BTC-PERP")
    assert isinstance(rec, Line)
    assert rec.raw == b'{"type":"tick","symbol":"BTC-PERP","price":35675.06,"ts":1621430420000}'


def test_a_single_symbol_csv_without_a_symbol_is_an_input_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.csv", b"timestamp_ms,price\n1621430420000,35675.06\n")
    with pytest.raises(InputError, match=r"c\.csv:1: .*no symbol column"):
        read_csv_ticks(path)


def test_an_unknown_csv_header_is_an_input_error_naming_file_and_header(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.csv", b"time,close\n1,2\n")
    with pytest.raises(InputError, match=r"c\.csv:1: unknown CSV header 'time,close'"):
        read_csv_ticks(path, symbol="BTC")


def test_an_empty_csv_yields_nothing(tmp_path: Path) -> None:
    assert list(read_csv_ticks(_write(tmp_path / "e.csv", b""))) == []


def test_csv_rows_that_cannot_be_ticks_are_bad_lines_with_file_line_and_reason(
    tmp_path: Path,
) -> None:
    path = _write(
        tmp_path / "bad.csv",
        b"ts,symbol,price\n"
        b"1,BTC,1.0\n"  # 2: fine
        b"2,BTC\n"  # 3: a field short
        b"3,BTC,1.0,9\n"  # 4: a field too many
        b"4,BTC,abc\n"  # 5: price not a number
        b"5.5,BTC,1.0\n"  # 6: ts not integer ms
        b"6,BTC,nan\n"  # 7: not finite
        b"7,,1.0\n",  # 8: no symbol
    )
    recs = list(read_csv_ticks(path))
    assert isinstance(recs[0], Line)
    bad = recs[1:]
    assert all(isinstance(b, BadLine) for b in bad)
    assert [(b.source, b.line_no, b.reason) for b in bad if isinstance(b, BadLine)] == [
        (str(path), 3, RejectReason.MISSING_FIELD),
        (str(path), 4, RejectReason.BAD_VALUE),
        (str(path), 5, RejectReason.BAD_TYPE),
        (str(path), 6, RejectReason.BAD_TYPE),
        (str(path), 7, RejectReason.NON_FINITE),
        (str(path), 8, RejectReason.MISSING_FIELD),
    ]
    assert str(bad[2]).startswith(f"{path}:5: bad_type: price 'abc'")


def test_a_non_positive_csv_price_is_left_to_the_decoder_which_rejects_it(
    tmp_path: Path, decoder: Decoder
) -> None:
    path = _write(tmp_path / "neg.csv", b"ts,symbol,price\n1,BTC-PERP,-5\n")
    (rec,) = read_csv_ticks(path)
    assert isinstance(rec, Line) and rec.line_no == 2
    rejected = decoder.decode_event(rec.raw)
    assert isinstance(rejected, Rejection)
    assert rejected.reason is RejectReason.NON_POSITIVE_PRICE


@pytest.mark.parametrize("name", ["r.csv", "r.CSV.gz", "r.csv.zst"])
def test_read_recording_reads_csv_files_as_ticks_whatever_the_compression(
    tmp_path: Path, name: str
) -> None:
    path = _write(tmp_path / name, b"ts,symbol,price\n5,BTC,1.5\n")
    (rec,) = read_recording(path)
    assert isinstance(rec, Line) and event_time(rec.raw) == 5


def test_read_recording_reads_everything_else_as_jsonl(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl.zst", TICK_1 + b"\n")
    assert list(read_recording(path)) == [Line(str(path), 1, TICK_1)]


# -- event time and merge ----------------------------------------------------------


def test_event_time_reads_an_integer_ts_and_nothing_else() -> None:
    assert event_time(TICK_1) == 1700000000123
    assert event_time(b'{"ts":1.5}') is None
    assert event_time(b'{"price":1}') is None
    assert event_time(b"{broken") is None
    assert event_time(b"[1,2]") is None


def _lines(source: str, *times: int | None) -> list[Record]:
    out: list[Record] = []
    for n, ts in enumerate(times, start=1):
        raw = b"{oops" if ts is None else b'{"type":"tick","ts":%d}' % ts
        out.append(Line(source, n, raw))
    return out


def _order(records: Iterator[Record]) -> list[tuple[str, int]]:
    return [(r.source, r.line_no) for r in records]


def test_merge_orders_lines_of_several_files_by_event_time() -> None:
    a = _lines("a", 10, 30, 50)
    b = _lines("b", 20, 40)
    c = _lines("c", 5)
    assert _order(merge_by_event_time([a, b, c])) == [
        ("c", 1),
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("b", 2),
        ("a", 3),
    ]


def test_merge_is_stable_equal_times_keep_file_order_then_line_order() -> None:
    a = _lines("a", 10, 10, 20)
    b = _lines("b", 10, 20)
    assert _order(merge_by_event_time([a, b])) == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
        ("a", 3),
        ("b", 2),
    ]


def test_merge_keeps_a_line_without_readable_time_at_its_position_in_its_file() -> None:
    a = _lines("a", 10, None, 30)
    b = _lines("b", 20, 25)
    assert _order(merge_by_event_time([a, b])) == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
        ("b", 2),
        ("a", 3),
    ]


def test_merge_passes_bad_lines_through_after_the_line_before_them() -> None:
    bad = BadLine("a", 2, RejectReason.BAD_TYPE, "price 'x'")
    a: list[Record] = [Line("a", 1, b'{"ts":10}'), bad, Line("a", 3, b'{"ts":30}')]
    b = _lines("b", 5, 20)
    merged = list(merge_by_event_time([a, b]))
    assert _order(iter(merged)) == [("b", 1), ("a", 1), ("a", 2), ("b", 2), ("a", 3)]
    assert merged[2] is bad


def test_merge_keeps_each_files_own_order_even_when_it_goes_back_in_time() -> None:
    a = _lines("a", 10, 5, 30)
    b = _lines("b", 20)
    assert _order(merge_by_event_time([a, b])) == [("a", 1), ("a", 2), ("b", 1), ("a", 3)]


def test_merge_is_lazy_and_reads_one_line_ahead_per_file() -> None:
    pulled: list[int] = []

    def endless(source: str) -> Iterator[Record]:
        n = 0
        while True:
            n += 1
            pulled.append(n)
            yield Line(source, n, b'{"ts":%d}' % n)

    merged = merge_by_event_time([endless("a"), endless("b")])
    first = [next(merged) for _ in range(4)]
    assert _order(iter(first)) == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert len(pulled) <= 6


def test_merge_of_no_streams_or_empty_streams_is_empty() -> None:
    assert list(merge_by_event_time([])) == []
    assert list(merge_by_event_time([[], []])) == []


def test_merge_of_real_files_reads_them_lazily_from_disk(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.jsonl.gz", TICK_1 + b"\n" + BALANCE + b"\n")
    b = _write(tmp_path / "b.csv.zst", b"ts,symbol,price\n1700000000200,BTC,64001.0\n")
    merged = list(merge_by_event_time([read_recording(a), read_recording(b)]))
    assert [(Path(r.source).name, r.line_no) for r in merged] == [
        ("a.jsonl.gz", 1),
        ("b.csv.zst", 2),
        ("a.jsonl.gz", 2),
    ]


# -- time window -------------------------------------------------------------------


def test_parse_time_accepts_epoch_milliseconds_and_iso_8601() -> None:
    assert parse_time_ms("1760130000000") == 1760130000000
    assert parse_time_ms("2025-10-10T21:00:00Z") == 1760130000000
    assert parse_time_ms("2025-10-10T23:00:00+02:00") == 1760130000000
    assert parse_time_ms("2025-10-10T21:00:00.250Z") == 1760130000250


def test_parse_time_reads_an_iso_time_without_zone_as_utc() -> None:
    assert parse_time_ms("2025-10-10T21:00") == 1760130000000
    assert parse_time_ms("2025-10-10") == 1760054400000


def test_parse_time_rejects_anything_else_with_a_readable_message() -> None:
    with pytest.raises(ValueError, match="neither epoch milliseconds nor an ISO-8601"):
        parse_time_ms("yesterday")


def test_within_keeps_the_half_open_window_and_passes_undated_records() -> None:
    bad = BadLine("a", 9, RejectReason.BAD_TYPE, "x")
    recs: list[Record] = [*_lines("a", 5, 10, None, 19, 20), bad]
    kept = list(within(recs, start_ms=10, end_ms=20))
    assert _order(iter(kept)) == [("a", 2), ("a", 3), ("a", 4), ("a", 9)]
    assert _order(within(recs, start_ms=19)) == [("a", 3), ("a", 4), ("a", 5), ("a", 9)]
    assert len(list(within(recs))) == len(recs)
