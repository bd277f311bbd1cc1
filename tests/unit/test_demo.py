"""The demo: its shipped books, what they hold, and the command end to end."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from rich.console import Console

from monitor.alerts.model import Alert, Culprit, Trigger, Victim
from monitor.cli import main
from monitor.demo.book import encode_book, generate, start_prices
from monitor.demo.scenarios import SCENARIOS
from monitor.events.schema import BalanceEvent, PositionEvent
from monitor.instruments import RiskParams, load_instruments
from monitor.replay.console import ConsoleAlertSink


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


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_shipped_book_is_what_its_seed_generates(params: RiskParams, name: str) -> None:
    sc = SCENARIOS[name]
    shipped = zstandard.ZstdDecompressor().decompress(sc.book_path().read_bytes())
    assert shipped == encode_book(generate(sc, params))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_books_hold_multi_symbol_cross_accounts_with_desks_and_several_collaterals(
    params: RiskParams, name: str
) -> None:
    sc = SCENARIOS[name]
    events = generate(sc, params, accounts=400)
    symbols: dict[str, set[str]] = defaultdict(set)
    desks: dict[str, set[str]] = defaultdict(set)
    assets: dict[str, set[str]] = defaultdict(set)
    first = start_prices(sc.ticks_path(), params, sc.start_ms)
    for ev in events:
        assert ev.ts == sc.start_ms
        if isinstance(ev, PositionEvent):
            symbols[ev.account].add(ev.symbol)
            desks[ev.account].add(ev.sub_account)
            assert ev.entry_price == first.get(ev.symbol, sc.static_marks.get(ev.symbol))
        elif isinstance(ev, BalanceEvent):
            assets[ev.account].add(ev.asset)
    assert len(symbols) == 400
    assert sum(len(s) > 1 for s in symbols.values()) > 200
    assert sum(len(d) > 1 for d in desks.values()) > 50
    assert sum(len(a) > 1 for a in assets.values()) > 100
    assert generate(sc, params, accounts=400) == events  # deterministic
    assert generate(sc, params, accounts=400, seed=1) != events


def _alert(account: str, severity: str, state: str = "firing") -> Alert:
    return Alert(
        id="x", kind="margin", severity=severity, state=state, account=account,  # type: ignore[arg-type]
        ts=1621430489300, emitted_at=0, margin_ratio=1.02, equity=1500.0,
        maintenance_margin=1530.0, trigger=Trigger("BTC-PERP", 33_000.0, 1621430489300),
        culprits=(Culprit("BTC-PERP", "momentum", -48_400.0),),
        victims=(Victim("ETH-PERP", "basis", 378_000.0, 0.0, None, None),),
        healthy_notional_at_risk=378_000.0,
    )  # fmt: skip


async def test_console_alerts_are_one_readable_line_each_and_bursts_are_counted() -> None:
    console = Console(record=True, width=300, force_terminal=False)
    sink = ConsoleAlertSink(console, per_batch=2)
    burst = [_alert(f"A{k}", "warning") for k in range(4)] + [_alert("Z", "liquidatable")]
    await sink.publish(burst)
    lines = console.export_text().splitlines()
    assert lines[0].startswith("2021-05-19 13:21:29.300  margin     liquidatable firing   Z")
    assert "MR 1.020" in lines[0] and "culprits BTC-PERP(momentum) -48.40k" in lines[0]
    assert len(lines) == 3 and "3 more alerts" in lines[2] and "3 margin warning firing" in lines[2]


def test_the_demo_prints_alerts_and_the_summary_and_writes_its_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--scenario", "crash-2021-05-19", "--out", str(tmp_path), "--no-report"])
    assert code == 0
    out = capsys.readouterr().out
    assert "liquidatable firing" in out
    assert "Replay summary" in out and "worst account:" in out
    alerts = tmp_path / "crash-2021-05-19" / "alerts.jsonl"
    assert f"alerts: {alerts}" in out
    assert alerts.stat().st_size > 0
    assert not (tmp_path / "crash-2021-05-19" / "report.html").exists()


def test_a_demo_book_of_another_size_is_generated_into_the_output(
    tmp_path: Path, params: RiskParams
) -> None:
    from monitor.demo.run import book_for

    sc = SCENARIOS["crash-2021-05-19"]
    assert book_for(sc, params, tmp_path, None, None) == sc.book_path()
    made = book_for(sc, params, tmp_path, 50, 3)
    assert made.parent == tmp_path and made.is_file()
    assert asyncio.iscoroutinefunction(ConsoleAlertSink.publish)
