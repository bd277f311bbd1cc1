"""Replay: merge order, input formats, the tick parser, pacing, rejections,
conflation, --from/--to and determinism of the alerts file."""

from __future__ import annotations

import asyncio
import gzip
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import zstandard

from monitor.cli import main
from monitor.clock import ManualClock
from monitor.events import Decoder, Rejection, Tick
from monitor.events.schema import BalanceEvent, PositionEvent, encode
from monitor.instruments import RiskParams, load_instruments
from monitor.replay import Replay, ReplayOptions, ReplayResult
from monitor.replay.batch import OBJECT, TICK
from monitor.replay.merge import merge_batches
from monitor.replay.pacing import Pacer
from monitor.replay.parse import FAST, TickParser
from monitor.replay.reader import StreamReader
from monitor.sources.files import BadLine, Line, merge_by_event_time, read_recording

T0 = 1_700_000_000_000


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """``monitor replay`` and ``monitor demo`` configure logging for the whole
    process (structlog, the root logger): put it back for the tests after."""
    import logging

    import structlog

    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def params() -> RiskParams:
    return load_instruments()


def _write(path: Path, data: bytes) -> Path:
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data, mtime=0))
    elif path.name.endswith(".zst"):
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path.write_bytes(data)
    return path


def _tick(symbol: str, price: float, ts: int) -> bytes:
    return encode(Tick(symbol, price, ts))


def _book_lines(ts: int = T0) -> list[bytes]:
    """One account long BTC-PERP at 10x with a healthy ETH-PERP short."""
    return [
        encode(BalanceEvent("A1", "USDT", 10_000.0, ts)),
        encode(PositionEvent("A1", "BTC-PERP", 2.0, 50_000.0, ts, sub_account="momentum")),
        encode(PositionEvent("A1", "ETH-PERP", -10.0, 3_000.0, ts, sub_account="basis")),
        encode(BalanceEvent("B2", "USDT", 100_000.0, ts)),
        encode(PositionEvent("B2", "BTC-PERP", 1.0, 50_000.0, ts)),
    ]


def _crash_lines(n: int = 200, ts: int = T0) -> list[bytes]:
    """BTC-PERP falls 10% in 20 s, 100 ms apart; ETH-PERP flat."""
    out = []
    for k in range(n):
        out.append(_tick("BTC-PERP", round(50_000.0 * (1 - 0.1 * k / (n - 1)), 1), ts + 100 * k))
        if k % 10 == 0:
            out.append(_tick("ETH-PERP", 3_000.0, ts + 100 * k))
    return out


def _replay(params: RiskParams, files: list[Path], **kw: object) -> ReplayResult:
    return asyncio.run(Replay(params, ReplayOptions(tuple(files), **kw)).run())  # type: ignore[arg-type]


# -- merge ---------------------------------------------------------------------


def _records(batches: list, names: list[str]) -> list[tuple[str, int]]:  # type: ignore[type-arg]
    out = []
    for b in batches:
        for s, line in zip(b.stream.tolist(), b.line.tolist(), strict=True):
            out.append((names[s], line))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_merge_orders_like_the_record_merge_equal_times_by_file_then_line(
    tmp_path: Path, params: RiskParams, seed: int
) -> None:
    rng = random.Random(seed)
    paths = []
    for f in range(3):
        lines, ts = [], T0
        for _ in range(rng.randint(0, 300)):
            ts += rng.choice([0, 0, 1, 5, 100])
            r = rng.random()
            if r < 0.03:
                lines.append(b"{not json")
            elif r < 0.06:
                lines.append(_tick("BTC-PERP", 1.0, ts - 1000))  # out of order
            elif r < 0.08:
                lines.append(b"")
            else:
                lines.append(_tick(rng.choice(["BTC-PERP", "ETH-PERP", "BTC"]), 100.0, ts))
        paths.append(_write(tmp_path / f"f{f}.jsonl", b"\n".join(lines) + b"\n"))
    names = [str(p) for p in paths]
    expected = [
        (r.source, r.line_no) for r in merge_by_event_time(read_recording(p) for p in paths)
    ]
    dec = Decoder(params)
    parser = TickParser(params.symbols)
    readers = [
        StreamReader(p, i, dec, parser, params.symbol_id, chunk_bytes=rng.choice([64, 1 << 20]))
        for i, p in enumerate(paths)
    ]
    got = _records(list(merge_batches([r.batches() for r in readers])), names)
    assert got == expected


# -- formats -------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
def test_jsonl_and_csv_plain_gzip_and_zstd_replay_to_the_same_book(
    tmp_path: Path, params: RiskParams, suffix: str
) -> None:
    book = _write(tmp_path / "book.jsonl", b"\n".join(_book_lines()) + b"\n")
    ticks = _crash_lines()
    jsonl = _write(tmp_path / f"t.jsonl{suffix}", b"\n".join(ticks) + b"\n")
    rows = [b"ts,symbol,price"]
    for raw in ticks:
        t = orjson.loads(raw)
        rows.append(f"{t['ts']},{t['symbol']},{t['price']!r}".encode())
    csv = _write(tmp_path / f"t.csv{suffix}", b"\r\n".join(rows) + b"\r\n")
    btc_only = [b"ts,price"] + [r.split(b",", 2)[0] + b"," + r.split(b",", 2)[2]
                                for r in rows[1:] if b"BTC-PERP" in r]  # fmt: skip
    single = _write(tmp_path / f"btc.csv{suffix}", b"\n".join(btc_only) + b"\n")
    a = _replay(params, [book, jsonl])
    b = _replay(params, [book, csv])
    c = _replay(params, [book, single, jsonl], symbol="BTC-PERP")
    for r in (a, b, c):
        assert not r.recorder.rejected
        assert np.array_equal(r.book.sym_price, a.book.sym_price, equal_nan=True)
        assert np.array_equal(r.book.status, a.book.status)
    assert a.stats.ticks == b.stats.ticks == len(ticks)
    assert a.book.status[a.book.slot_of("A1")] == 3  # liquidatable after a 10% fall at 10x


def test_the_tick_parser_agrees_with_the_wire_decoder(params: RiskParams) -> None:
    rng = random.Random(7)
    lines = [
        b'{"type":"tick","symbol":"BTC-PERP","price":64000.5,"ts":1700000000123}',
        b'{"type":"tick","symbol":"DOGE-PERP","price":0.08385,"ts":0}',
        b'{"type":"tick","symbol":"BTC","price":1e-05,"ts":5}',
        b'{"type":"tick","symbol":"BTC","price":12E+3,"ts":5}',
        b'{"type":"tick","symbol":"BTC","price":64000,"ts":5}\r',
        b'{"type":"tick","symbol":"BTC","price":0.0,"ts":5}',
        b'{"type":"tick","symbol":"BTC","price":-1.5,"ts":5}',
        b'{"type":"tick","symbol":"BTC","price":01.5,"ts":5}',
        b'{"type":"tick","symbol":"BTC","price":1.,"ts":5}',
        b'{"type":"tick","symbol":"BTC","price":1.5,"ts":05}',
        b'{"type":"tick","symbol":"BTC","price":1.5,"ts":-5}',
        b'{"type":"tick","symbol":"NOPE","price":1.5,"ts":5}',
        b'{"type":"tick","symbol":"BT\\u0043","price":1.5,"ts":5}',
        b'{"type":"tick","symbol":"BTC","price":1.5,"ts":5} ',
        b'{"type":"tick","symbol":"BTC","price":1.5,"ts":5}}',
        b'{"type":"tick","symbol":"BTC","price":1.5,"ts":99999999999999999999}',
        b'{"type":"tick","symbol":"BTC","price":123456789012345678,"ts":5}',
        b' {"type":"tick","symbol":"BTC","price":1.5,"ts":5}',
        b'{"type":"tick","symbol":"BTC","price":NaN,"ts":5}',
    ]
    for _ in range(3000):
        mant = rng.choice([rng.random() * 10 ** rng.randint(-8, 9), rng.randint(1, 10**6)])
        text = rng.choice([repr(float(mant)), f"{mant:.{rng.randint(0, 12)}f}", f"{mant:e}"])
        lines.append(b'{"type":"tick","symbol":"ETH-PERP","price":' + text.encode()
                     + b',"ts":' + str(rng.randint(0, 2**50)).encode() + b"}")  # fmt: skip
    data = b"\n".join(lines) + b"\n"
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10).astype(np.int64)
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    kind, sym, price, ts = TickParser(params.symbols).parse(buf, starts, ends)
    dec = Decoder(params)
    fast = 0
    for i, raw in enumerate(lines):
        ev = dec.decode_event(raw.rstrip(b"\r"))
        if kind[i] == FAST:
            fast += 1
            assert isinstance(ev, Tick), raw
            assert (params.symbols[sym[i]], float(price[i]), int(ts[i])) == (
                ev.symbol, ev.price, ev.ts
            ), raw  # fmt: skip
    assert fast > 2500


# -- pacing ----------------------------------------------------------------------


class RecordingClock(ManualClock):
    def __init__(self, start_ms: int) -> None:
        super().__init__(start_ms)
        self.sleeps: list[int] = []

    async def sleep_until(self, t_ms: int) -> None:
        self.sleeps.append(t_ms)
        await super().sleep_until(t_ms)


async def test_speed_paces_event_time_through_the_injected_clock(
    tmp_path: Path, params: RiskParams
) -> None:
    lines = [_tick("BTC-PERP", 50_000.0, T0 + dt) for dt in (0, 1000, 1000, 2500, 10_000)]
    f = _write(tmp_path / "t.jsonl", b"\n".join(lines) + b"\n")
    clock = RecordingClock(5_000)
    r = Replay(params, ReplayOptions((f,), speed=10.0), pace_clock=clock)
    await r.run()
    assert clock.sleeps == [5_100, 5_250, 6_000]  # offsets / 10 from the first event
    fast = RecordingClock(5_000)
    await Replay(params, ReplayOptions((f,)), pace_clock=fast).run()
    assert fast.sleeps == []


async def test_pacer_rejects_a_non_positive_speed() -> None:
    from monitor.errors import ConfigError

    with pytest.raises(ConfigError):
        Pacer(0.0, ManualClock())


# -- rejections ------------------------------------------------------------------


def test_bad_lines_are_reported_with_file_and_line(tmp_path: Path, params: RiskParams) -> None:
    jl = _write(tmp_path / "bad.jsonl.zst", b"\n".join([
        _tick("BTC-PERP", 50_000.0, T0),
        b"{broken",
        b"",
        _tick("NOPE-PERP", 1.0, T0 + 1),
        b'{"type":"tick","symbol":"BTC-PERP","price":-3,"ts":1700000000002}',
        _tick("BTC-PERP", 49_000.0, T0 - 5),  # stale
        encode(BalanceEvent("A", "DOGE", 1.0, T0 + 3)),
    ]) + b"\n")  # fmt: skip
    csv = _write(tmp_path / "bad.csv", b"ts,symbol,price\n1700000000000,ETH-PERP,3000\n"
                 b"1700000000001,ETH-PERP\nnot-a-time,ETH-PERP,1\n")  # fmt: skip
    for window in (0, 1000):
        r = _replay(params, [jl, csv], window_ms=window)
        got = {
            (x.file.rsplit("/", 1)[-1], x.line, x.reason)
            for rows in r.recorder.first_rejected.values()
            for x in rows
        }
        assert got == {
            ("bad.jsonl.zst", 2, "malformed_json"),
            ("bad.jsonl.zst", 4, "unknown_symbol"),
            ("bad.jsonl.zst", 5, "non_positive_price"),
            ("bad.jsonl.zst", 6, "stale"),
            ("bad.jsonl.zst", 7, "unknown_asset"),
            ("bad.csv", 3, "missing_field"),
            ("bad.csv", 4, "bad_type"),
        }, window
        assert r.stats.events == 9


def test_conflated_windows_keep_the_latest_tick_per_symbol(
    tmp_path: Path, params: RiskParams
) -> None:
    book = _write(tmp_path / "book.jsonl", b"\n".join(_book_lines()) + b"\n")
    ticks = _write(tmp_path / "t.jsonl", b"\n".join(_crash_lines()) + b"\n")
    every = _replay(params, [book, ticks])
    windowed = _replay(params, [book, ticks], window_ms=1000)
    assert windowed.stats.evaluations < every.stats.evaluations / 5
    assert np.array_equal(every.book.sym_price, windowed.book.sym_price, equal_nan=True)
    assert np.array_equal(every.book.status, windowed.book.status)
    assert windowed.recorder.alerts[("margin", "firing")] >= 1


class _Collect:
    """An alert sink that keeps what it is given."""

    def __init__(self) -> None:
        self.alerts: list[Any] = []

    async def start(self) -> None:
        pass

    async def publish(self, alerts: Sequence[Any]) -> None:
        self.alerts.extend(alerts)

    async def flush(self, timeout_s: float) -> None:
        pass

    async def close(self) -> None:
        pass


def test_from_builds_state_without_alerting_and_to_stops_before(
    tmp_path: Path, params: RiskParams
) -> None:
    book = _write(tmp_path / "book.jsonl", b"\n".join(_book_lines()) + b"\n")
    ticks = _write(tmp_path / "t.jsonl", b"\n".join(_crash_lines()) + b"\n")
    start = T0 + 19_150  # between two BTC ticks (100 ms apart), A1 at risk by then
    sink = _Collect()
    late = asyncio.run(
        Replay(params, ReplayOptions((book, ticks), start_ms=start), sinks=[sink]).run()
    )
    assert late.stats.warmup_events > 0
    assert late.recorder.first_reached  # at risk when alerting starts: alerted then
    # Alerting starts at the first live event (T0 + 19,200), as the daemon goes live
    # once caught up: the state built before is alerted then (emitted_at), blamed as
    # any alert on the newest warm-up input of the account: the BTC tick at T0 + 19,100
    # (ETH last ticked at T0 + 19,000).
    going_live = [a for a in sink.alerts if a.emitted_at == T0 + 19_200]
    assert going_live and {a.account for a in going_live} == {"A1"}
    for a in going_live:
        assert a.state == "firing" and a.ts == T0 + 19_100
        assert a.trigger is not None and (a.trigger.symbol, a.trigger.ts) == ("BTC-PERP", a.ts)
        assert a.trigger.price == round(50_000.0 * (1 - 0.1 * 191 / 199), 1)
    assert min(a.emitted_at for a in sink.alerts) == T0 + 19_200  # nothing before --from
    first = min(t for row in late.recorder.first_reached.values() for t in row if t is not None)
    assert first == T0 + 19_100
    whole = _replay(params, [book, ticks])
    assert whole.recorder.first_reached["A1"][0] < first  # warning came earlier, unalerted
    after = _replay(params, [book, ticks], start_ms=T0 + 60_000)  # every event before it
    assert after.stats.warmup_events == after.stats.events
    # the last BTC tick (T0 + 19,900) is the newest input of both accounts
    assert min(t for row in after.recorder.first_reached.values() for t in row if t) == T0 + 19_900
    early = _replay(params, [book, ticks], end_ms=T0 + 1_000)
    assert early.stats.last_ts is not None and early.stats.last_ts < T0 + 1_000
    assert not early.recorder.alerts


# -- command line ------------------------------------------------------------------


def _cli_files(tmp_path: Path) -> list[str]:
    book = _write(tmp_path / "book.jsonl.gz", b"\n".join(_book_lines()) + b"\n")
    ticks = _write(tmp_path / "t.jsonl.zst", b"\n".join(_crash_lines()) + b"\n")
    return [str(book), str(ticks)]


@pytest.mark.parametrize("window", ["0", "500"])
def test_the_same_input_gives_a_byte_identical_alerts_file(
    tmp_path: Path, window: str, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _cli_files(tmp_path)
    outs = []
    for k in range(2):
        out = tmp_path / f"alerts{k}.jsonl"
        assert main(["replay", *files, "--alerts-out", str(out), "--window-ms", window]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    lines = outs[0].splitlines()
    assert lines and all(orjson.loads(x)["kind"] in ("margin", "contagion") for x in lines)
    printed = capsys.readouterr()
    assert "Replay summary" in printed.out
    assert "\x1b[" not in printed.err  # no progress display when not on a terminal


def test_alerts_go_to_stdout_without_alerts_out_and_the_summary_json_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = tmp_path / "s.json"
    assert main(["replay", *_cli_files(tmp_path), "--summary-json", str(summary)]) == 0
    printed = capsys.readouterr()
    alerts = [orjson.loads(x) for x in printed.out.splitlines()]
    assert alerts and {a["account"] for a in alerts} == {"A1"}
    assert "Replay summary" in printed.err
    doc = orjson.loads(summary.read_bytes())
    assert doc["first_reached"]["A1"]["liquidatable"] is not None
    assert doc["alerts"]["by_kind"]["margin"]["firing"] >= 1
    assert doc["largest_healthy_notional_at_risk"]["account"] == "A1"
    assert doc["worst_account"]["account"] == "A1"
    assert doc["peak_accounts"]["liquidatable"]["accounts"] == 1


def test_strict_exits_1_on_rejections_and_bad_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write(tmp_path / "bad.jsonl", b"{oops\n")
    assert main(["replay", str(bad), "--alerts-out", str(tmp_path / "a")]) == 0
    assert main(["replay", str(bad), "--strict", "--alerts-out", str(tmp_path / "a")]) == 1
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["replay", str(bad), "--speed", "0"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["replay", str(bad), "--speed", "2", "--max-speed"])
    assert main(["replay", str(bad), "--from", "2025-01-02", "--to", "2025-01-01"]) == 2
    err = capsys.readouterr().err
    assert "missing.jsonl" in err and "--to must be after --from" in err


def test_rows_keep_objects_in_order_through_take(params: RiskParams, tmp_path: Path) -> None:
    f = _write(tmp_path / "m.jsonl", b"\n".join([
        _tick("BTC-PERP", 1.0, T0), b"{x", encode(BalanceEvent("A", "USDT", 1.0, T0)),
        _tick("BTC-PERP", 1.0, T0),
    ]) + b"\n")  # fmt: skip
    r = StreamReader(f, 0, Decoder(params), TickParser(params.symbols), params.symbol_id)
    (b,) = list(r.batches())
    assert b.kind.tolist() == [TICK, OBJECT, OBJECT, TICK]
    back = b.take(np.array([3, 2, 1, 0]))
    assert isinstance(back.objs[0], BalanceEvent) and isinstance(back.objs[1], Rejection)
    assert not any(isinstance(o, BadLine | Line) for o in b.objs)


def test_progress_shows_events_time_alerts_and_rate_on_a_terminal_only(
    tmp_path: Path, params: RiskParams
) -> None:
    import io

    from rich.console import Console

    from monitor.replay.progress import ReplayProgress

    book = _write(tmp_path / "book.jsonl", b"\n".join(_book_lines()) + b"\n")
    ticks = _write(tmp_path / "t.jsonl", b"\n".join(_crash_lines()) + b"\n")
    screen = io.StringIO()
    shown = ReplayProgress(Console(file=screen, force_terminal=True, width=200), refresh_s=0.0)
    files = (book, ticks)
    asyncio.run(Replay(params, ReplayOptions(files), progress=shown).run())
    text = screen.getvalue()
    assert "events 225" in text and "at 2023-11-14 22:13:39.900" in text
    assert "alerts " in text and "events/s" in text
    quiet = io.StringIO()
    off = ReplayProgress(Console(file=quiet, force_terminal=False))
    asyncio.run(Replay(params, ReplayOptions(files), progress=off).run())
    assert not off.enabled and quiet.getvalue() == ""


# -- compiled tick runs against one Engine.apply per tick -----------------------------

_PERPS = ("BTC-PERP", "ETH-PERP", "SOL-PERP", "DOGE-PERP", "HYPE-PERP")
_START = {"BTC-PERP": 60_000.0, "ETH-PERP": 3_000.0, "SOL-PERP": 150.0, "DOGE-PERP": 0.2,
          "HYPE-PERP": 30.0, "BTC": 60_000.0, "ETH": 3_000.0, "USDC": 1.0}  # fmt: skip


def _random_recording(tmp_path: Path, seed: int) -> list[Path]:
    """A random cross/isolated book with multi-asset collateral (one file), random
    walks with jumps, stale and collateral ticks (another), and account events
    changing the book while it runs (a third): merged by event time."""
    rng = random.Random(seed)
    book: list[bytes] = []
    accounts = [f"R{a}" for a in range(rng.randint(15, 50))]
    for acct in accounts:
        usdt = rng.uniform(500.0, 20_000.0)
        book.append(encode(BalanceEvent(acct, "USDT", usdt, T0)))
        for asset, share in (("BTC", 0.4), ("ETH", 0.3), ("USDC", 0.2)):
            if rng.random() < share:
                book.append(encode(BalanceEvent(acct, asset, usdt * rng.random() / _START[asset],
                                                T0)))  # fmt: skip
        for sym in rng.sample(_PERPS, rng.randint(1, 4)):
            notional = usdt * rng.uniform(1.0, 25.0)
            qty = notional / _START[sym] * rng.choice((1.0, -1.0))
            iso = rng.random() < 0.15
            book.append(encode(PositionEvent(
                acct, sym, qty, _START[sym] * rng.uniform(0.97, 1.03), T0,
                margin_mode="isolated" if iso else "cross",
                isolated_margin=notional / rng.uniform(5.0, 30.0) if iso else 0.0,
                sub_account=rng.choice(("", "desk-1", "desk-2")),
            )))  # fmt: skip
    px = dict(_START)
    drift = {s: rng.uniform(-0.002, 0.001) for s in px}
    ticks: list[bytes] = []
    ts = T0
    for _ in range(rng.randint(1500, 3000)):
        ts += rng.choice((0, 0, 1, 3, 10, 50, 200))
        sym = rng.choice((*_PERPS, *_PERPS, "BTC", "ETH", "USDC"))
        if rng.random() < 0.02:
            ticks.append(_tick(sym, px[sym], ts - 400))  # stale, usually
            continue
        move = drift[sym] + rng.gauss(0.0, 0.004) + (rng.random() < 0.01) * rng.uniform(-0.1, 0.1)
        px[sym] = max(px[sym] * (1.0 + move), 1e-6)
        ticks.append(_tick(sym, px[sym], ts))
    events: list[bytes] = []
    te = T0
    while te < ts:
        te += rng.randint(50, 3000)
        acct = rng.choice(accounts)
        r = rng.random()
        if r < 0.4:
            sym = rng.choice(_PERPS)
            qty = 0.0 if rng.random() < 0.3 else rng.uniform(-2.0, 2.0) * 20_000.0 / _START[sym]
            events.append(encode(PositionEvent(acct, sym, qty, _START[sym], te)))
        elif r < 0.8:
            asset = rng.choice(("USDT", "BTC", "ETH", "USDC"))
            amount = (
                0.0 if rng.random() < 0.2 else rng.uniform(100.0, 20_000.0) / _START.get(asset, 1.0)
            )
            events.append(encode(BalanceEvent(acct, asset, amount, te)))
        else:
            events.append(encode(BalanceEvent(acct, "USDT", 10.0, te - 5_000)))  # stale
    return [
        _write(tmp_path / "book.jsonl", b"\n".join(book) + b"\n"),
        _write(tmp_path / "ticks.jsonl.zst", b"\n".join(ticks) + b"\n"),
        _write(tmp_path / "events.jsonl", b"\n".join(events) + b"\n"),
    ]


def _both_paths(
    params: RiskParams, files: list[Path], out: Path, speed: float | None = None,
    **kw: object,
) -> list[tuple[bytes, dict[str, object], ReplayResult, list[int]]]:  # fmt: skip
    """Replay ``files`` through the compiled tick runs and through one
    ``Engine.apply`` per tick: alerts file, summary, result and pacing sleeps."""
    from monitor.alerts.config import AlertsConfig
    from monitor.replay.summary import summary
    from monitor.sinks.file import FileSink

    got = []
    for compiled in (True, False):
        path = out / f"alerts-{compiled}.jsonl"
        path.write_bytes(b"")
        clock = RecordingClock(0)
        opts = ReplayOptions(tuple(files), compiled_ticks=compiled, speed=speed, **kw)  # type: ignore[arg-type]
        r = Replay(params, opts, alerts_config=AlertsConfig(stale_price_s=5.0),
                   sinks=[FileSink(path)], pace_clock=clock)  # fmt: skip
        result = asyncio.run(r.run())
        doc = summary(result)
        doc.pop("timing")
        got.append((path.read_bytes(), doc, result, clock.sleeps))
    return got


def _same_book(a: ReplayResult, b: ReplayResult) -> None:
    x, y = a.book, b.book
    n = x.n_accounts
    assert x.account_ids == y.account_ids
    assert np.array_equal(x.acc_f[:, :n], y.acc_f[:, :n])
    assert np.array_equal(x.acc_i[:, :n], y.acc_i[:, :n])
    assert np.array_equal(x.sym_price, y.sym_price, equal_nan=True)
    assert np.array_equal(x.asset_price, y.asset_price)
    assert x.last_event_ts == y.last_event_ts


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("window", [0, 250])
def test_compiled_tick_runs_give_the_same_alerts_byte_for_byte_on_random_books(
    tmp_path: Path, params: RiskParams, seed: int, window: int
) -> None:
    files = _random_recording(tmp_path, seed)
    start = T0 + 20_000 if seed % 3 == 0 else None
    (fast, fdoc, fres, _), (slow, sdoc, sres, _) = _both_paths(
        params, files, tmp_path, window_ms=window, start_ms=start
    )
    assert fast == slow
    assert fdoc == sdoc
    _same_book(fres, sres)
    assert fres.stats.evaluations == sres.stats.evaluations
    assert fast.count(b"\n") > 0  # the books do move through the levels
    assert sum(fres.recorder.rejected.values()) > 0  # stale ticks and events among them


def test_compiled_tick_runs_stop_at_every_tick_that_moves_an_account(
    tmp_path: Path, params: RiskParams
) -> None:
    """Across seeds the streams exercise every way a run ends, and the alert
    files still agree (the property above); here: that they do."""
    from monitor.replay import ticks as T

    seen: set[int] = set()
    real = T.TickRunner.run

    def spy(self: T.TickRunner, *a: object, **kw: object) -> tuple[int, int, int]:
        out = real(self, *a, **kw)  # type: ignore[arg-type]
        seen.add(out[1])
        return out

    files = _random_recording(tmp_path, 3)
    mp = pytest.MonkeyPatch()
    mp.setattr(T.TickRunner, "run", spy)
    try:
        _replay(params, files)
    finally:
        mp.undo()
    assert seen == {T.END, T.DIRTY, T.STALE, T.LIMIT}


def test_compiled_tick_runs_pace_like_one_tick_at_a_time(
    tmp_path: Path, params: RiskParams
) -> None:
    files = _random_recording(tmp_path, 5)
    (fast, _, _, fsleeps), (slow, _, _, ssleeps) = _both_paths(params, files, tmp_path, speed=7.0)
    assert fast == slow
    assert fsleeps == ssleeps and len(fsleeps) > 100


@pytest.mark.parametrize("name", ["cascade-2025-10-10", "crash-2021-05-19"])
@pytest.mark.parametrize("window", [None, 0, 1000])
def test_compiled_tick_runs_give_the_same_alerts_on_the_bundled_scenarios(
    tmp_path: Path, params: RiskParams, name: str, window: int | None
) -> None:
    from monitor.demo.scenarios import SCENARIOS

    sc = SCENARIOS[name]
    files = [sc.book_path(), sc.ticks_path()]
    w = sc.window_ms if window is None else window
    (fast, fdoc, fres, _), (slow, sdoc, sres, _) = _both_paths(params, files, tmp_path,
                                                                window_ms=w)  # fmt: skip
    assert fast == slow and fast.count(b"\n") > 10
    assert fdoc == sdoc
    _same_book(fres, sres)


def test_progress_counts_events_applied_not_events_read(tmp_path: Path, params: RiskParams) -> None:
    import io

    from rich.console import Console

    from monitor.replay.progress import ReplayProgress

    class Shown(ReplayProgress):
        def __init__(self) -> None:
            super().__init__(Console(file=io.StringIO(), force_terminal=True), refresh_s=0.0)
            self.seen: list[tuple[int, bool]] = []

        def update(self, events: int, event_ts: int | None, alerts: int, *,
                   force: bool = False) -> None:  # fmt: skip
            self.seen.append((events, force))
            super().update(events, event_ts, alerts, force=force)

    ticks = _write(tmp_path / "t.jsonl", b"\n".join(_crash_lines()) + b"\n")
    shown = Shown()
    # one window holds everything: nothing is applied before the end
    opts = ReplayOptions((ticks,), window_ms=10**9, chunk_bytes=512)
    r = asyncio.run(Replay(params, opts, progress=shown).run())
    assert len(shown.seen) > 3
    assert all(n == 0 for n, force in shown.seen if not force)
    assert shown.seen[-1] == (r.stats.events, True)
    shown = Shown()
    asyncio.run(Replay(params, ReplayOptions((ticks,), chunk_bytes=512), progress=shown).run())
    counts = [n for n, _ in shown.seen]
    assert counts == sorted(counts) and 0 < counts[0] < counts[-1] == r.stats.events


# -- monitor record files ----------------------------------------------------------


def _recorded(topic: str, offset: int, key: str | None, value: bytes | None, ts: int) -> bytes:
    """A line exactly as ``monitor record`` writes it."""
    from types import SimpleNamespace

    import msgspec

    from monitor.sources.kafka import recorded

    raw_key = None if key is None else key.encode()
    msg = SimpleNamespace(topic=topic, partition=offset % 3, offset=offset, key=raw_key,
                          value=value, timestamp=ts)  # fmt: skip
    return msgspec.json.encode(recorded(msg))


def _untyped(line: bytes) -> bytes:
    doc = orjson.loads(line)
    doc.pop("type")
    return orjson.dumps(doc)


def _as_recording(lines: list[bytes], prices: str = "prices") -> list[bytes]:
    """Wire lines as a recording: ticks on ``prices`` (every other one without its
    ``type``, as the prices topic allows), account events on account-events."""
    out = []
    for k, line in enumerate(lines):
        doc = orjson.loads(line)
        if doc["type"] == "tick":
            value = _untyped(line) if k % 2 else line
            out.append(_recorded(prices, k, doc["symbol"], value, doc["ts"]))
        else:
            out.append(_recorded("account-events", k, doc["account"], line, doc["ts"]))
    return out


def test_the_tick_parser_reads_record_lines_as_the_record_decoder_does(
    params: RiskParams,
) -> None:
    from monitor.replay.records import RecordDecoder

    rng = random.Random(11)
    tick = b'{"type":"tick","symbol":"ETH-PERP","price":3012.25,"ts":1700000000123}'
    lines = [
        _recorded("prices", 7, "ETH-PERP", tick, 1700000000123),
        _recorded("prices", 8, None, tick, 5),
        _recorded("other", 9, "k", tick, -1),
        _recorded("prices", 10, "ETH-PERP", _untyped(tick), 5),  # no type: the decoder's
        _recorded("prices", 11, "x", None, 5),  # a tombstone
        _recorded("prices", 12, "x", b"\x00not json", 5),  # value_b64
        b'{"topic":"prices","partition":0,"offset":01,"timestamp":5,"value":' + tick + b"}",
        b'{"topic":"pri\\u0063es","partition":0,"offset":1,"timestamp":5,"value":' + tick + b"}",
        b'{"topic":"prices","partition":0,"offset":1,"timestamp":5,"value":' + tick + b"}}",
        b'{"topic":"prices","partition":0,"offset":1,"timestamp":5,"value":' + tick + b" }",
        b'{"topic":"prices","partition":0,"offset":1,"timestamp":5,"value":' + tick[:-1] + b"}",
        b'{"topic":"prices","value":' + tick + b"}",
        b'{"topic":"prices","timestamp":5,"partition":0,"value":' + tick + b"}",
        b'{"topic":7,"value":' + tick + b"}",
        b'{"topic":"prices","partition":0,"offset":1,"key":null,"timestamp":5,"value":'
        + tick
        + b"}",
        b'{"topic":"prices","partition":0,"offset":1,"timestamp":5,"value":' + tick,
        b'{"topic":"prices","partition":0,"offset":123456789012345678901,"timestamp":5,"value":'
        + tick
        + b"}",
    ]
    for k in range(2000):
        price = repr(round(rng.uniform(1e-4, 1e6), rng.randint(0, 8))).encode()
        value = (b'{"type":"tick","symbol":"BTC-PERP","price":' + price + b',"ts":'
                 + str(rng.randint(0, 2**50)).encode() + b"}")  # fmt: skip
        topic = rng.choice(["prices", "account-events"])
        key = rng.choice([None, "BTC-PERP"])
        lines.append(_recorded(topic, k, key, value, rng.randint(-1, 2**45)))
    data = b"\n".join(lines) + b"\n"
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10).astype(np.int64)
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    kind, sym, price, ts = TickParser(params.symbols).parse(buf, starts, ends)
    dec = RecordDecoder(Decoder(params))
    fast = 0
    for i, raw in enumerate(lines):
        ev, _ = dec.decode_line(raw)
        if kind[i] == FAST:
            fast += 1
            assert isinstance(ev, Tick), raw
            assert (params.symbols[sym[i]], float(price[i]), int(ts[i])) == (
                ev.symbol, ev.price, ev.ts
            ), raw  # fmt: skip
    assert np.flatnonzero(kind[:17] == FAST).tolist() == [0, 1, 2, 11]  # the canonical layouts
    assert fast > 1900


def test_a_recording_replays_like_the_wire_lines_it_holds(
    tmp_path: Path, params: RiskParams, capsys: pytest.CaptureFixture[str]
) -> None:
    wire_lines = _book_lines() + _crash_lines()
    wire = _write(tmp_path / "wire.jsonl", b"\n".join(wire_lines) + b"\n")
    rec = _write(tmp_path / "rec.jsonl.zst", b"\n".join(_as_recording(wire_lines)) + b"\n")
    custom = _write(tmp_path / "px.jsonl.gz",
                    b"\n".join(_as_recording(wire_lines, "px")) + b"\n")  # fmt: skip
    cfg = tmp_path / "monitor.toml"
    cfg.write_text('[topics]\nprices = "px"\n')
    outs, docs = [], []
    for files, extra in (([wire], []), ([rec], []), ([custom], ["--config", str(cfg)])):
        out = tmp_path / f"alerts{len(outs)}.jsonl"
        summary = tmp_path / f"summary{len(outs)}.json"
        argv = ["replay", *map(str, files), "--alerts-out", str(out), "--summary-json",
                str(summary), *extra]  # fmt: skip
        assert main(argv) == 0
        outs.append(out.read_bytes())
        doc = orjson.loads(summary.read_bytes())
        for k in ("files", "timing"):
            doc.pop(k)
        docs.append(doc)
    assert outs[0] and outs[0] == outs[1] == outs[2]
    assert docs[0] == docs[1] == docs[2] and docs[0]["rejected"]["total"] == 0
    # evaluate and stress read recordings too
    capsys.readouterr()
    states = []
    for f, extra in ((wire, []), (rec, []), (custom, ["--prices-topic", "px"])):
        assert main(["evaluate", str(f), "--compact", *extra]) == 0
        states.append(orjson.loads(capsys.readouterr().out))
        assert main(["stress", str(f), "--shock", "BTC=-5%", "--json", *extra]) == 0
        states.append(orjson.loads(capsys.readouterr().out))
    assert states[0] == states[2] == states[4] and states[1] == states[3] == states[5]
    assert states[0]["summary"]["rejected"] == 0


def test_bad_record_lines_are_reported_with_file_and_line(
    tmp_path: Path, params: RiskParams
) -> None:
    pos = encode(PositionEvent("A", "BTC-PERP", 1.0, 50_000.0, T0))
    rec = _write(tmp_path / "rec.jsonl", b"\n".join([
        _recorded("prices", 0, "BTC-PERP", _tick("BTC-PERP", 50_000.0, T0), T0),
        _recorded("prices", 1, "BTC-PERP", None, T0),  # a tombstone
        _recorded("prices", 2, "BTC-PERP", b"\x00\xff", T0),  # not JSON
        _recorded("account-events", 3, "A", _untyped(pos), T0),  # type omitted off prices
        _recorded("prices", 4, "BTC-PERP", b'{"symbol":"BTC-PERP","price":-1,"ts":5}', T0),
        b'{"topic":["prices"],"value":{}}',
        _recorded("account-events", 5, "A", pos, T0),
    ]) + b"\n")  # fmt: skip
    r = _replay(params, [rec])
    got = {
        (x.line, x.reason, x.detail.split(":")[0])
        for rows in r.recorder.first_rejected.values()
        for x in rows
    }
    assert got == {
        (2, "missing_field", "prices record at offset 1"),
        (3, "malformed_json", "prices record at offset 2"),
        (4, "missing_field", "account-events record at offset 3"),
        (5, "non_positive_price", "prices record at offset 4"),
        (6, "bad_type", "record line"),
    }
    assert r.stats.account_events == 1 and r.book.n_positions == 1


# -- summary and report figures ------------------------------------------------------


def test_the_worst_moment_keeps_its_figure_time_and_book_from_one_sample(
    tmp_path: Path, params: RiskParams
) -> None:
    # 400 accounts reach warning one after the other as BTC-PERP slides, each
    # adding its healthy ETH-PERP short to the notional at risk: late samples
    # rise by less than 1% each
    lines = []
    for k in range(400):
        lines.append(encode(BalanceEvent(f"S{k}", "USDT", 300.0 + 25.0 * k, T0)))
        lines.append(encode(PositionEvent(f"S{k}", "BTC-PERP", 1.0, 50_000.0, T0)))
        lines.append(encode(PositionEvent(f"S{k}", "ETH-PERP", -1.0, 3_000.0, T0)))
    lines += [_tick("ETH-PERP", 3_000.0, T0)]
    lines += [_tick("BTC-PERP", 50_000.0 - 25.0 * k, T0 + 100 * k) for k in range(400)]
    f = _write(tmp_path / "slide.jsonl", b"\n".join(lines) + b"\n")
    for keep in (True, False):
        r = _replay(params, [f], keep_worst=keep)
        w = r.recorder.worst
        assert w is not None
        ts, risk = r.recorder.risk.arrays()
        at = risk[ts == w.ts, 0]
        assert at.shape == (1,) and at[0] == w.at_risk  # the figure of that sample
        assert w.at_risk >= risk[:, 0].max() / (1.01 if keep else 1.0)
        assert np.count_nonzero(np.diff(risk[:, 0]) > 0) > 100  # it did rise, in steps
        if keep:
            assert w.snapshot is not None and w.snapshot.ts == w.ts
            assert w.at_risk < risk[:, 0].max()  # copies were not taken at every step


def test_the_worst_account_is_seen_between_samples(tmp_path: Path, params: RiskParams) -> None:
    book = _write(tmp_path / "book.jsonl", b"\n".join(_book_lines()) + b"\n")
    # BTC-PERP -12% for 200 ms, back before the next sample (every 10 s)
    spike = [_tick("BTC-PERP", p, T0 + dt) for dt, p in
             ((0, 50_000.0), (5_000, 44_000.0), (5_200, 50_000.0), (9_000, 50_100.0))]  # fmt: skip
    ticks = _write(tmp_path / "t.jsonl", b"\n".join(spike) + b"\n")
    r = _replay(params, [book, ticks], sample_ms=10_000)
    assert r.recorder.worst_account is not None
    ratio, _, account, ts = r.recorder.worst_account
    assert (account, ts) == ("A1", T0 + 5_000) and ratio >= 1.0
    assert r.recorder.first_reached["A1"][2] == T0 + 5_000
    assert r.book.margin_ratio[r.book.slot_of("A1")] < 0.8  # healthy again at the end


def test_a_replay_of_only_rejected_lines_says_so_in_summary_and_report(
    tmp_path: Path, params: RiskParams
) -> None:
    from monitor.replay.summary import render, summary
    from monitor.report.page import render_page

    bad = _write(tmp_path / "bad.jsonl", b"{oops\nnot json either\n")
    r = _replay(params, [bad], keep_worst=True)
    text = render(summary(r))
    assert "events: 2 (0 ticks, 0 account events), no event time read" in text
    assert " - " not in text.splitlines()[2]
    page = render_page(r)
    for section in (
        "Price paths",
        "Accounts by status",
        "Healthy notional at risk",
        "Margin ratios at the worst moment",
        "Liquidation map at the worst moment",
    ):
        head = page.index(f"<h2>{section}</h2>")
        assert page[head:].split("</h2>", 1)[1].startswith('<p class="na">Not available: ')
    assert "<img" not in page and "no event time read" in page


def test_the_report_without_a_kept_book_says_why_its_book_plots_are_missing(
    tmp_path: Path, params: RiskParams
) -> None:
    from monitor.report.page import render_page

    book = _write(tmp_path / "book.jsonl", b"\n".join(_book_lines()) + b"\n")
    ticks = _write(tmp_path / "t.jsonl", b"\n".join(_crash_lines()) + b"\n")
    page = render_page(_replay(params, [book, ticks]))
    assert page.count('alt="') == 3  # price paths, statuses, notional at risk
    assert page.count("Not available: the book was not kept at the worst moment") == 2


def test_price_paths_and_the_map_leave_out_what_never_moves(
    tmp_path: Path, params: RiskParams
) -> None:
    from monitor.cascade.snapshot import take_snapshot
    from monitor.report.page import _map_underlyings, _price_columns

    book = _write(tmp_path / "book.jsonl", b"\n".join(_book_lines()) + b"\n")
    crash = _write(tmp_path / "t.jsonl", b"\n".join(_crash_lines()) + b"\n")
    r = _replay(params, [book, crash])
    sym = params.symbol_id
    assert _price_columns(r) == [sym["BTC-PERP"], sym["ETH-PERP"]]
    assert _map_underlyings(r, take_snapshot(r.book)) == ["BTC", "ETH"]
    # a collateral price that ticks is drawn, unless an instrument on it already is
    more = _write(tmp_path / "c.jsonl", b"\n".join([
        _tick("USDC", 0.99, T0 + 50), _tick("BTC", 50_000.0, T0 + 50),
    ]) + b"\n")  # fmt: skip
    r = _replay(params, [book, crash, more])
    assert _price_columns(r) == [sym["BTC-PERP"], sym["ETH-PERP"], sym["USDC"]]
    assert _map_underlyings(r, take_snapshot(r.book)) == ["BTC", "ETH", "USDC"]


def test_windows_are_paced_to_their_last_event_through_the_injected_clock(
    tmp_path: Path, params: RiskParams
) -> None:
    lines = [_tick("BTC-PERP", 50_000.0 - dt, T0 + dt) for dt in (0, 500, 1500, 2600, 2700, 9100)]
    f = _write(tmp_path / "t.jsonl", b"\n".join(lines) + b"\n")
    clock = RecordingClock(5_000)
    r = asyncio.run(
        Replay(params, ReplayOptions((f,), speed=10.0, window_ms=1000), pace_clock=clock).run()
    )
    # windows end at +500 (the first: the pace starts there), +1500, +2700, +9100
    assert clock.sleeps == [5_100, 5_220, 5_860]
    assert r.stats.evaluations == 4 and r.book.sym_price[params.symbol_id["BTC-PERP"]] == 40_900.0


def test_batches_of_unreadable_lines_change_nothing_but_the_rejections(
    tmp_path: Path, params: RiskParams
) -> None:
    book = _write(tmp_path / "book.jsonl", b"\n".join(_book_lines()) + b"\n")
    lines = _crash_lines()
    ticks = _write(tmp_path / "t.jsonl", b"\n".join(lines) + b"\n")
    bad = [b"{x"] * 40
    noisy = _write(tmp_path / "n.jsonl", b"\n".join([*bad, *lines[:50], *bad, *lines[50:]])
                   + b"\n")  # fmt: skip
    clean = _replay(params, [book, ticks], chunk_bytes=256)
    dirty = _replay(params, [book, noisy], chunk_bytes=256)  # batches of bad lines alone
    assert dirty.recorder.rejected == {"malformed_json": 80}
    assert dirty.recorder.alerts == clean.recorder.alerts
    assert dirty.stats.evaluations == clean.stats.evaluations
    assert (dirty.stats.first_ts, dirty.stats.last_ts) == (T0, clean.stats.last_ts)
