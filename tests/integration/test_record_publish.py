"""`monitor publish` then `monitor record` against a real broker: the recording
equals the input."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from monitor.cli import main
from tests.support.tansu import TansuBroker, Topics, create_topics, make_workload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


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
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as b:
        yield b


def read_zst(path: Path) -> list[dict[str, object]]:
    with open(path, "rb") as fh:
        data = zstandard.ZstdDecompressor().stream_reader(fh).read()
    return [json.loads(line) for line in data.splitlines()]


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_wire_jsonl_published_and_recorded_comes_back_line_for_line(
    broker: TansuBroker, tmp_path: Path
) -> None:
    t = Topics.fresh()
    await create_topics(broker.bootstrap, [t.prices, t.account_events], partitions=2)
    work = make_workload(accounts=10, ticks=60, events=90, seed=2)
    src = tmp_path / "in.jsonl"
    # Interleave in event-time order, as a recording would be.
    lines = sorted(
        [v for _, v in work.prices] + [v for _, v in work.events],
        key=lambda v: json.loads(v)["ts"],
    )
    src.write_bytes(b"\n".join(lines) + b"\n")
    common = ["--bootstrap", broker.bootstrap, "--topic-prices", t.prices]
    assert (
        await cli("publish", str(src), "--speed", "0", *common, "--topic-events", t.account_events)
        == 0
    )
    out = tmp_path / "rec.jsonl.zst"
    n = len(lines)
    assert await cli("record", "--topics", f"{t.prices},{t.account_events}", "--out", str(out),
                     "--count", str(n), "--bootstrap", broker.bootstrap) == 0  # fmt: skip
    got = read_zst(out)
    assert len(got) == n
    # Every line is back, byte for byte, on the right topic with the right key.
    by_topic = {
        t.prices: [v for _, v in work.prices],
        t.account_events: [v for _, v in work.events],
    }
    for topic, values in by_topic.items():
        recs = [r for r in got if r["topic"] == topic]
        assert sorted(json.dumps(r["value"]).encode() for r in recs) == sorted(
            json.dumps(json.loads(v)).encode() for v in values
        )
        for r in recs:
            v = r["value"]
            assert isinstance(v, dict)
            assert r["key"] == (v["symbol"] if topic == t.prices else v["account"])
            assert r["timestamp"] == v["ts"]
    # One key's messages keep their order (one partition per key).
    for key in {r["key"] for r in got}:
        ts = [r["value"]["ts"] for r in got if r["key"] == key]  # type: ignore[index]
        assert ts == sorted(ts)
    # The recording replays and evaluates as the wire lines it holds (the prices
    # topic's ticks without `type` included), its topics named by a config file.
    wire = tmp_path / "wire.jsonl"
    wire.write_bytes(b"\n".join(_typed(v) for v in lines) + b"\n")
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(f'[topics]\nprices = "{t.prices}"\naccount_events = "{t.account_events}"\n')
    docs = []
    for f, extra in ((out, ["--config", str(cfg)]), (wire, [])):
        summary = tmp_path / f"{f.name}.summary.json"
        assert await cli("replay", str(f), "--alerts-out", str(tmp_path / f"{f.name}.alerts"),
                         "--summary-json", str(summary), *extra) == 0  # fmt: skip
        docs.append(json.loads(summary.read_bytes()))
    for k in ("events", "ticks", "account_events", "accounts", "rejected"):
        assert docs[0][k] == docs[1][k], k
    assert docs[0]["rejected"]["total"] == 0 and docs[0]["ticks"] == len(work.prices)
    states = []
    for f, extra in ((out, ["--prices-topic", t.prices]), (wire, [])):
        state = tmp_path / f"{f.name}.state.json"
        with state.open("w") as fh, contextlib.redirect_stdout(fh):
            assert await cli("evaluate", str(f), "--compact", *extra) == 0
        states.append(json.loads(state.read_bytes()))
    assert states[0]["summary"] == states[1]["summary"]
    held = [
        {a["account"]: sorted((p["symbol"], p["qty"]) for p in a["positions"])
         for a in st["accounts"]}
        for st in states
    ]  # fmt: skip
    assert held[0] == held[1] and len(held[0]) == 10


def _typed(value: bytes) -> bytes:
    """A prices-topic value as a wire line (``type`` may be left out on that topic)."""
    doc = json.loads(value)
    doc.setdefault("type", "tick")
    return json.dumps(doc, separators=(",", ":")).encode()


async def test_a_recording_published_again_records_identically(
    broker: TansuBroker, tmp_path: Path
) -> None:
    t1, t2 = Topics.fresh(), Topics.fresh()
    await create_topics(broker.bootstrap, [t1.prices, t2.prices], partitions=3)
    rec = tmp_path / "first.jsonl"
    lines = []
    for i in range(30):
        value: dict[str, object] = {"symbol": "BTC-PERP", "price": 60000.0 + i, "ts": 1000 + i}
        line: dict[str, object] = {"topic": t2.prices, "partition": i % 3, "offset": i // 3}
        line.update(key="BTC-PERP", timestamp=1000 + i, value=value)
        lines.append(line)
    # A value that is not JSON travels as base64, and a tombstone as no value at all.
    lines.append({"topic": t2.prices, "partition": 1, "offset": 10, "key": "x", "timestamp": 2000,
                  "value_b64": base64.b64encode(b"\x00\xffnot json").decode()})  # fmt: skip
    lines.append({"topic": t2.prices, "partition": 2, "offset": 10, "key": "y", "timestamp": 2001})
    rec.write_text("\n".join(json.dumps(x, separators=(",", ":")) for x in lines) + "\n")
    assert await cli("publish", str(rec), "--speed", "0", "--bootstrap", broker.bootstrap) == 0
    out = tmp_path / "second.jsonl.zst"
    assert await cli("record", "--topics", t2.prices, "--out", str(out), "--count",
                     str(len(lines)), "--bootstrap", broker.bootstrap) == 0  # fmt: skip
    got = sorted(read_zst(out), key=lambda r: (r["partition"], r["offset"]))  # type: ignore[arg-type, return-value]
    want = sorted(lines, key=lambda r: (r["partition"], r["offset"]))  # type: ignore[arg-type, return-value]
    assert got == want


async def test_publish_reports_unroutable_lines(
    broker: TansuBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = Topics.fresh()
    await create_topics(broker.bootstrap, [t.prices, t.account_events], partitions=1)
    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"symbol":"BTC-PERP","price":1.0,"ts":0}\n'
        "garbage\n"
        '{"type":"position","symbol":"BTC-PERP","qty":1,"entry_price":1,"ts":400}\n'
        '{"symbol":"BTC-PERP","price":2.0,"ts":400}\n'
    )
    rc = await cli("publish", str(src), "--speed", "0", "--bootstrap", broker.bootstrap,
                   "--topic-prices", t.prices, "--topic-events", t.account_events)  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err
    assert "in.jsonl:2" in err and "in.jsonl:3" in err
    assert "2 messages published, 2 lines skipped" in err


async def test_retimed_files_arrive_restamped_from_the_start_paced_on_the_clock(
    broker: TansuBroker, tmp_path: Path
) -> None:
    from dataclasses import replace

    from monitor.cli.commands.publish import publish_files
    from monitor.clock import ManualClock
    from monitor.config import load_config

    t = Topics.fresh()
    await create_topics(broker.bootstrap, [t.prices, t.account_events], partitions=2)
    book = tmp_path / "book.jsonl"
    ticks = tmp_path / "ticks.jsonl"
    book.write_text(
        '{"type":"balance","account":"A","asset":"USDT","amount":1000,"ts":1621430420000}\n'
        '{"type":"position","account":"A","symbol":"BTC-PERP","qty":1,"entry_price":10,'
        '"ts":1621430420000}\n'
    )
    ticks.write_text("".join(
        f'{{"symbol":"BTC-PERP","price":{10 - i},"ts":{1621430420000 + 100 * i}}}\n'
        for i in range(5)
    ))  # fmt: skip
    start = 1_900_000_000_000
    clock = ManualClock(start)
    kafka = replace(load_config(None).kafka, bootstrap_servers=broker.bootstrap)
    bad: list[str] = []
    n = await publish_files(kafka, [str(book), str(ticks)], prices=t.prices,
                            events=t.account_events, speed=1.0, retime=True, clock=clock,
                            bad=bad)  # fmt: skip
    assert (n, bad) == (7, [])
    # The clock was slept on, up to the last message's new event time: no real wait.
    assert clock.now_ms() == start + 400
    out = tmp_path / "rec.jsonl.zst"
    assert await cli("record", "--topics", f"{t.prices},{t.account_events}", "--out", str(out),
                     "--count", "7", "--bootstrap", broker.bootstrap) == 0  # fmt: skip
    got = read_zst(out)
    ticks_ts = sorted(r["value"]["ts"] for r in got if r["topic"] == t.prices)  # type: ignore[index]
    assert ticks_ts == [start + 100 * i for i in range(5)]
    book_ts = [r["value"]["ts"] for r in got if r["topic"] == t.account_events]  # type: ignore[index]
    assert book_ts == [start, start]
    # The Kafka timestamp moves with the event time; nothing else changes.
    for r in got:
        v = r["value"]
        assert isinstance(v, dict)
        assert r["timestamp"] == v["ts"]
    prices = sorted((r["value"]["ts"], r["value"]["price"]) for r in got if r["topic"] == t.prices)  # type: ignore[index]
    assert [p for _, p in prices] == [10, 9, 8, 7, 6]
