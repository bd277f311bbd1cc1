"""Importers of real recordings, the `monitor import` command and the demo data.

Fixtures under tests/fixtures/recordings/ are unchanged excerpts of the real
recordings (see the README there); literal lines below are copied from them.
"""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.errors import InputError
from monitor.events import Decoder, RejectReason, Tick
from monitor.importers import FORMATS
from monitor.importers.binance_ws import default_symbol, market_of
from monitor.importers.candles import candle_path
from monitor.importers.common import ALL, ImportOptions, ImportStats
from monitor.importers.output import write_ticks
from monitor.importers.run import import_files, summary
from monitor.instruments.load import load_instruments
from monitor.sources.files import BadLine, parse_time_ms, read_jsonl, read_recording

REC = Path(__file__).resolve().parent.parent / "fixtures" / "recordings"
USDM = REC / "usdm_btcusdt_20240808.head60.jsonl.gz"
SPOT = REC / "spot_btcusdt_20240808.head20.jsonl.gz"
CM = REC / "cm_btcusd_perp_20240808.head40.jsonl.gz"
CRASH = REC / "btcusdt-binance-2021-05-19-flash-crash-100ms.head20.csv"
CANDLES = REC / "candles_1h_2025-10-10T20-22.csv"

# Real lines (spot ETH, usdm BTC recordings of 2024-08-08).
SPOT_ETH_BOOK = (
    b'1723161254024619568 {"stream":"ethusdt@bookTicker","data":{"u":35346513501,"s":"ETHUSDT",'
    b'"b":"2683.80000000","B":"3.02920000","a":"2683.81000000","A":"31.43950000"}}'
)
SPOT_ETH_DEPTH = (
    b'1723161254036052868 {"stream":"ethusdt@depth@100ms","data":{"e":"depthUpdate",'
    b'"E":1723161255308,"s":"ETHUSDT","U":35346513499,"u":35346513505,'
    b'"b":[["2683.80000000","3.02920000"]],"a":[["2733.70000000","0.00000000"]]}}'
)
USDM_TRADE = (
    b'1723161255088176367 {"stream":"btcusdt@trade","data":{"e":"trade","E":1723161256322,'
    b'"T":1723161256322,"s":"BTCUSDT","t":5266583935,"p":"61800.30","q":"0.006","X":"MARKET",'
    b'"m":false}}'
)
USDM_BOOK = (
    b'1723161255088169167 {"stream":"btcusdt@bookTicker","data":{"e":"bookTicker",'
    b'"u":5123107839020,"s":"BTCUSDT","b":"61800.20","B":"2.507","a":"61800.30","A":"2.510",'
    b'"T":1723161256313,"E":1723161256313}}'
)


def _run(
    fmt: str, *paths: Path, opts: ImportOptions | None = None, **window: int
) -> tuple[list[Tick], ImportStats, list[BadLine]]:
    bad: list[BadLine] = []
    ticks, stats = import_files(
        FORMATS[fmt], list(paths), opts or ImportOptions(), on_bad=bad.append, **window
    )
    return ticks, stats, bad


def _gz(path: Path, *lines: bytes) -> Path:
    path.write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines)))
    return path


# -- binance-ws ------------------------------------------------------------------------


def test_binance_ws_usdm_trades_and_book_tickers_become_btc_perp_ticks() -> None:
    ticks, stats, bad = _run("binance-ws", USDM)
    assert bad == []
    assert stats.lines == 60
    assert stats.ticks == len(ticks) == 6 + 46
    assert {t.symbol for t in ticks} == {"BTC-PERP"}
    # Line 3 is a trade at 61800.30, exchange time T; line 2 a book ticker 61800.20/61800.30.
    assert Tick("BTC-PERP", 61800.3, 1723161256322) in ticks
    assert Tick("BTC-PERP", 61800.25, 1723161256313) in ticks


def test_binance_ws_depth_updates_and_the_rest_snapshot_are_counted_as_known_messages() -> None:
    _, stats, bad = _run("binance-ws", USDM)
    assert bad == []
    assert stats.skipped == {"depth update": 7, "depth snapshot": 1}
    assert stats.lines == stats.ticks + sum(stats.skipped.values())


def test_binance_ws_output_is_ordered_by_exchange_time_not_by_receive_order(
    tmp_path: Path,
) -> None:
    # The book ticker was received first but happened 9 ms before the trade anyway;
    # swap them so the file order is the wrong way round.
    path = _gz(tmp_path / "usdm_btcusdt_x.jsonl.gz", USDM_TRADE, USDM_BOOK)
    ticks, _, _ = _run("binance-ws", path)
    assert [t.ts for t in ticks] == [1723161256313, 1723161256322]
    ticks, _, _ = _run("binance-ws", USDM)
    assert [t.ts for t in ticks] == sorted(t.ts for t in ticks)


def test_binance_spot_book_tickers_take_the_exchange_clock_offset_seen_in_the_file() -> None:
    ticks, stats, bad = _run("binance-ws", SPOT)
    assert bad == [] and stats.skipped == {"depth update": 4, "depth snapshot": 1}
    assert {t.symbol for t in ticks} == {"BTC"}
    # Line 3: book ticker received at ...54087 ms; line 2 (depth) showed E - recv = 1272 ms.
    assert Tick("BTC", 61837.635, 1723161254087 + 1272) in ticks
    assert Tick("BTC", 61837.63, 1723161255342) in ticks  # the trade at its exchange time


def test_a_spot_book_ticker_before_any_exchange_time_waits_for_the_first_offset(
    tmp_path: Path,
) -> None:
    path = _gz(tmp_path / "spot_ethusdt_x.jsonl.gz", SPOT_ETH_BOOK, SPOT_ETH_DEPTH)
    ticks, stats, bad = _run("binance-ws", path)
    assert bad == [] and stats.skipped == {"depth update": 1}
    offset = 1723161255308 - 1723161254036
    assert ticks == [Tick("ETH", 2683.805, 1723161254024 + offset)]


def test_coin_m_streams_map_to_their_own_inverse_symbol_unless_mapped() -> None:
    ticks, stats, bad = _run("binance-ws", CM)
    assert bad == [] and stats.skipped == {"depth update": 28, "depth snapshot": 1}
    assert {t.symbol for t in ticks} == {"BTCUSD-PERP"}
    assert Tick("BTCUSD-PERP", 61804.75, 1723161257465) in ticks
    mapped = ImportOptions(symbol_map={"cm:btcusd_perp": "BTC-PERP"})
    ticks, _, _ = _run("binance-ws", CM, opts=mapped)
    assert {t.symbol for t in ticks} == {"BTC-PERP"}


@pytest.mark.parametrize(
    ("stream_symbol", "market", "symbol"),
    [
        ("btcusdt", "usdm", "BTC-PERP"),
        ("btcusdt", "spot", "BTC"),
        ("ethusdt", "usdm", "ETH-PERP"),
        ("ethusdt", "spot", "ETH"),
        ("btcusd_perp", "cm", "BTCUSD-PERP"),
        ("solusdc", "usdm", "SOL-PERP"),
    ],
)
def test_stream_names_map_to_wire_symbols_by_market(
    stream_symbol: str, market: str, symbol: str
) -> None:
    assert default_symbol(stream_symbol, market) == symbol


def test_symbol_map_overrides_the_default_for_every_market_or_one(tmp_path: Path) -> None:
    usdm = _gz(tmp_path / "usdm_btcusdt_x.jsonl.gz", USDM_TRADE)
    ticks, _, _ = _run("binance-ws", usdm, opts=ImportOptions(symbol_map={"btcusdt": "XBT-PERP"}))
    assert ticks[0].symbol == "XBT-PERP"
    only_spot = ImportOptions(symbol_map={"spot:btcusdt": "XBT"})
    ticks, _, _ = _run("binance-ws", usdm, opts=only_spot)
    assert ticks[0].symbol == "BTC-PERP"


def test_the_market_comes_from_the_file_name_or_must_be_given(tmp_path: Path) -> None:
    assert market_of(Path("usdm_ethusdt_20240808.jsonl.gz")) == "usdm"
    assert market_of(Path("spot_btcusdt_20240808.jsonl.gz")) == "spot"
    assert market_of(Path("cm_btcusd_perp_20240808.jsonl.gz")) == "cm"
    odd = _gz(tmp_path / "recording.jsonl.gz", USDM_TRADE)
    with pytest.raises(InputError, match=r"recording\.jsonl\.gz: cannot tell the market"):
        _run("binance-ws", odd)
    ticks, _, _ = _run("binance-ws", odd, opts=ImportOptions(market="spot"))
    assert ticks == [Tick("BTC", 61800.3, 1723161256322)]


def test_prices_trade_keeps_only_trades_and_counts_the_book_tickers() -> None:
    ticks, stats, _ = _run("binance-ws", USDM, opts=ImportOptions(prices="trade"))
    assert len(ticks) == 6
    assert stats.skipped["bookTicker (--prices trade)"] == 46


def test_unknown_and_broken_websocket_lines_are_reported_with_file_and_line(
    tmp_path: Path,
) -> None:
    path = _gz(
        tmp_path / "usdm_btcusdt_x.jsonl.gz",
        USDM_TRADE,  # 1
        b"",  # 2: blank
        b'1723161255088176367 {"stream":"btcusdt@kline_1m","data":{"E":1}}',  # 3
        b'1723161255088176367 {"stream":"btcusdt@trade","data":{"T":1723161256322}}',  # 4
        b'1723161255088176367 {"stream":"btcusdt@trade","data":{"p":"x","T":1}}',  # 5
        b'1723161255088176367 {"stream":"btcusdt@trade","data":{"p":"1","T":"1"}}',  # 6
        b"1723161255088176367 {truncated",  # 7
        b"no-space-here",  # 8
        b'1723161255088176367 {"result":null,"id":1}',  # 9
        b'1723161255088176367 {"stream":"btcusdt@trade","data":{"p":"0","T":1}}',  # 10
    )
    ticks, stats, bad = _run("binance-ws", path)
    assert len(ticks) == 1 and stats.skipped == {"blank line": 1}
    assert [(b.source, b.line_no, b.reason) for b in bad] == [
        (str(path), 3, RejectReason.UNKNOWN_TYPE),
        (str(path), 4, RejectReason.MISSING_FIELD),
        (str(path), 5, RejectReason.BAD_VALUE),
        (str(path), 6, RejectReason.BAD_TYPE),
        (str(path), 7, RejectReason.MALFORMED_JSON),
        (str(path), 8, RejectReason.MALFORMED_JSON),
        (str(path), 9, RejectReason.UNKNOWN_TYPE),
        (str(path), 10, RejectReason.NON_POSITIVE_PRICE),
    ]
    assert stats.bad == 8 and stats.lines == 10
    assert "kline_1m" in bad[0].detail


# -- binance-csv -------------------------------------------------------------------------


def test_binance_csv_rows_become_ticks_of_the_given_symbol() -> None:
    ticks, stats, bad = _run("binance-csv", CRASH, opts=ImportOptions(symbol="BTC-PERP"))
    assert bad == [] and stats.lines == 21 and len(ticks) == 20
    assert ticks[0] == Tick("BTC-PERP", 35675.06, 1621430420000)
    assert ticks[1] == Tick("BTC-PERP", 35704.0, 1621430420100)


def test_binance_csv_also_spot_adds_the_coin_at_the_same_price_and_time() -> None:
    opts = ImportOptions(symbol="BTC-PERP", also_spot=frozenset({"BTC"}))
    ticks, _, _ = _run("binance-csv", CRASH, opts=opts)
    assert len(ticks) == 40
    assert ticks[:2] == [
        Tick("BTC-PERP", 35675.06, 1621430420000),
        Tick("BTC", 35675.06, 1621430420000),
    ]


def test_binance_csv_needs_a_symbol() -> None:
    with pytest.raises(InputError, match="--symbol"):
        _run("binance-csv", CRASH)


def test_binance_csv_bad_rows_are_reported_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("timestamp_ms,price\n1621430420000,35675.06\n1621430420100,\n\n1,-3\n")
    ticks, stats, bad = _run("binance-csv", path, opts=ImportOptions(symbol="BTC-PERP"))
    assert len(ticks) == 1 and stats.lines == 5
    assert [(b.line_no, b.reason) for b in bad] == [
        (3, RejectReason.BAD_TYPE),
        (5, RejectReason.NON_POSITIVE_PRICE),
    ]


# -- candles -----------------------------------------------------------------------------


def test_a_down_candle_goes_to_its_high_first_then_its_low() -> None:
    # Binance BTC, 2025-10-10 21:00 UTC: the cascade's hour.
    start = parse_time_ms("2025-10-10T21:00:00Z")
    assert candle_path(114200.4, 115075.6, 101516.5, 113253.6, start, 3_600_000) == [
        (start, 114200.4),
        (start + 15 * 60_000, 115075.6),
        (start + 30 * 60_000, 101516.5),
        (start + 3_599_999, 113253.6),
    ]


def test_an_up_candle_goes_to_its_low_first_then_its_high() -> None:
    start = parse_time_ms("2025-10-10T22:00:00Z")
    path = candle_path(113253.6, 114071.0, 111020.4, 113606.3, start, 3_600_000)
    assert [p for _, p in path] == [113253.6, 111020.4, 114071.0, 113606.3]


def test_a_flat_candle_is_taken_as_an_up_candle() -> None:
    assert [p for _, p in candle_path(10.0, 12.0, 9.0, 10.0, 0, 3_600_000)] == [
        10.0,
        9.0,
        12.0,
        10.0,
    ]


def test_candles_of_the_selected_venue_become_four_perp_ticks_each() -> None:
    ticks, stats, bad = _run("candles", CANDLES)
    assert bad == []
    assert stats.lines == 46 and stats.skipped == {"other venues": 30}
    assert len(ticks) == 15 * 4
    assert {t.symbol for t in ticks} == {f"{c}-PERP" for c in ("BTC", "ETH", "SOL", "DOGE", "HYPE")}
    btc = [(t.ts, t.price) for t in ticks if t.symbol == "BTC-PERP"]
    start = parse_time_ms("2025-10-10T21:00:00Z")
    assert (start + 30 * 60_000, 101516.5) in btc  # the cascade low, at +30 min
    assert [ts for ts, _ in btc] == sorted(ts for ts, _ in btc)


def test_candles_venue_coins_and_also_spot_select_what_is_emitted() -> None:
    opts = ImportOptions(venue="bybit", coins=frozenset({"BTC"}), also_spot=frozenset({"BTC"}))
    ticks, stats, _ = _run("candles", CANDLES, opts=opts)
    assert stats.skipped == {"other venues": 30, "other coins": 12}
    assert len(ticks) == 3 * 4 * 2
    assert min(t.price for t in ticks if t.symbol == "BTC") == 101045.9
    every = ImportOptions(also_spot=frozenset({ALL}))
    ticks, _, _ = _run("candles", CANDLES, opts=every)
    assert {t.symbol for t in ticks} >= {"SOL", "DOGE", "HYPE", "SOL-PERP"}


def test_candles_outside_the_window_are_counted_not_written() -> None:
    start = parse_time_ms("2025-10-10T21:00:00Z")
    ticks, stats, _ = _run("candles", CANDLES, start_ms=start, end_ms=start + 3_600_000)
    assert len(ticks) == 5 * 4 and stats.outside_window == 10 * 4
    assert all(start <= t.ts < start + 3_600_000 for t in ticks)


def test_broken_candle_rows_are_reported_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(
        "timestamp,venue,coin,o,h,l,c,v\n"
        "2025-10-10T21:00:00Z,binance,BTC,114200.4,115075.6,101516.5,113253.6,1\n"
        "2025-10-10T21:00:00Z,binance,BTC,114200.4,100.0,101516.5,113253.6,1\n"  # high < open
        "yesterday,binance,BTC,1,2,0.5,1.5,1\n"
        "2025-10-10T21:00:00Z,binance,BTC,1,x,0.5,1.5,1\n"
        "2025-10-10T21:00:00Z,binance\n"
        "2025-10-10T21:00:00Z,binance,BTC,0,2,0,1.5,1\n"
    )
    ticks, _, bad = _run("candles", path)
    assert len(ticks) == 4
    assert [(b.source, b.line_no, b.reason) for b in bad] == [
        (str(path), 3, RejectReason.BAD_VALUE),
        (str(path), 4, RejectReason.BAD_VALUE),
        (str(path), 5, RejectReason.BAD_TYPE),
        (str(path), 6, RejectReason.MISSING_FIELD),
        (str(path), 7, RejectReason.NON_POSITIVE_PRICE),
    ]


def test_a_file_that_is_not_a_candle_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("timestamp_ms,price\n1,2\n")
    with pytest.raises(InputError, match=r"x\.csv:1: not a candle file"):
        _run("candles", path)


# -- output and summary --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["o.jsonl", "o.jsonl.gz", "o.jsonl.zst"])
def test_written_ticks_read_back_identically_whatever_the_compression(
    tmp_path: Path, name: str
) -> None:
    ticks = [Tick("BTC-PERP", 61800.25, 1723161256313), Tick("BTC", 61837.635, 1723161255359)]
    assert write_ticks(str(tmp_path / name), ticks) == 2
    raws = [line.raw for line in read_jsonl(tmp_path / name)]
    assert raws == [
        b'{"type":"tick","symbol":"BTC-PERP","price":61800.25,"ts":1723161256313}',
        b'{"type":"tick","symbol":"BTC","price":61837.635,"ts":1723161255359}',
    ]
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_compressed_output_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    ticks = [Tick("BTC", 1.5, 1)]
    for name in ("a.gz", "b.gz", "a.zst", "b.zst"):
        write_ticks(str(tmp_path / name), ticks)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()
    assert (tmp_path / "a.zst").read_bytes() == (tmp_path / "b.zst").read_bytes()


def test_the_summary_accounts_for_lines_ticks_known_messages_and_bad_lines() -> None:
    _, stats, _ = _run("binance-ws", USDM)
    assert summary(stats, "out.jsonl.zst") == (
        "import: 60 lines read from 1 file, 52 ticks written to out.jsonl.zst, "
        "8 known messages skipped (depth snapshot 1, depth update 7), 0 bad lines"
    )


# -- the command -----------------------------------------------------------------------------


def test_import_command_writes_zstd_prints_a_summary_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ws.jsonl.zst"
    code = main(["import", "--format", "binance-ws", str(USDM), str(SPOT), "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.startswith("import: 80 lines read from 2 files, 67 ticks written to ")
    assert captured.err == ""
    lines = list(read_recording(out))
    assert len(lines) == 67


def test_import_command_reports_bad_lines_on_stderr_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _gz(tmp_path / "usdm_btcusdt_x.jsonl.gz", USDM_TRADE, b"1 {broken")
    out = tmp_path / "o.jsonl"
    code = main(["import", "--format", "binance-ws", str(src), "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert f"{src}:2: malformed_json:" in captured.err
    assert "1 bad line" in captured.out
    assert len(list(read_jsonl(out))) == 1


def test_import_command_exits_2_on_an_unreadable_input_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.jsonl.zst"
    code = main(["import", "--format", "candles", str(CANDLES), "missing.csv.gz", "-o", str(out)])
    assert code == 2
    assert "missing.csv.gz" in capsys.readouterr().err
    assert not out.exists()


def test_import_command_rejects_options_that_do_not_apply_to_the_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["import", "--format", "binance-ws", str(USDM), "-o", str(tmp_path / "o")]
    assert main([*argv, "--venue", "bybit"]) == 2
    assert "--venue applies to --format candles only" in capsys.readouterr().err


def test_import_command_rejects_an_unreadable_time_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["import", "--format", "candles", str(CANDLES), "-o", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--from", "soon"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--from" in err


def test_import_command_window_and_candle_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c.jsonl.gz"
    argv = ["import", "--format", "candles", str(CANDLES), "-o", str(out)]
    argv += ["--coins", "BTC,ETH", "--also-spot", "BTC", "--from", "2025-10-10T21:00Z"]
    assert main(argv) == 0
    assert "ticks outside --from/--to" in capsys.readouterr().out
    ticks = {line.raw for line in read_jsonl(out)}
    assert b'{"type":"tick","symbol":"BTC","price":101516.5,"ts":1760131800000}' in ticks
    assert len(ticks) == 2 * 4 * 3


# -- the demo data shipped in the package ----------------------------------------------------

DEMO = {
    "crash_2021-05-19_btc_100ms.jsonl.zst": (2000, 33000.0),
    "cascade_2025-10-10_hourly.jsonl.zst": (2016, 101516.5),
}


@pytest.mark.parametrize("name", sorted(DEMO))
def test_demo_data_is_small_sorted_and_fully_valid_for_the_default_instruments(
    name: str,
) -> None:
    path = Path(str(resources.files("monitor") / "data" / name))
    assert path.stat().st_size < 200_000
    decoder = Decoder(load_instruments())
    events = [decoder.decode_event(line.raw) for line in read_jsonl(path)]
    ticks = [e for e in events if isinstance(e, Tick)]
    count, btc_low = DEMO[name]
    assert len(ticks) == len(events) == count
    assert [t.ts for t in ticks] == sorted(t.ts for t in ticks)
    assert min(t.price for t in ticks if t.symbol == "BTC-PERP") == btc_low
    assert {t.symbol for t in ticks} >= {"BTC-PERP", "BTC"}
