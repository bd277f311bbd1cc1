"""``monitor demo``: real crashes replayed against the bundled synthetic books.

For each scenario: the book file and the recording are replayed through the
engine (:class:`~monitor.replay.Replay`), alerts are printed as they happen
and written as JSON lines, then the summary is printed and the HTML report
written. The books shipped in ``monitor/data`` are used as they are; another
size or seed generates a new book into the output directory first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from rich.console import Console

from monitor.alerts.config import AlertsConfig
from monitor.demo.book import generate, write_book
from monitor.demo.scenarios import Scenario
from monitor.engine import AlertSink
from monitor.instruments.model import RiskParams
from monitor.replay import Replay, ReplayOptions, ReplayResult
from monitor.replay.console import ConsoleAlertSink
from monitor.replay.progress import ReplayProgress
from monitor.replay.summary import render, summary
from monitor.report import write_report
from monitor.sinks.file import FileSink


@dataclass(frozen=True, slots=True)
class DemoRun:
    scenario: Scenario
    result: ReplayResult
    alerts: Path
    report: Path | None


def book_for(
    scenario: Scenario, params: RiskParams, out: Path, accounts: int | None, seed: int | None
) -> Path:
    """The shipped book, or a freshly generated one for another size or seed."""
    if (accounts in (None, scenario.accounts)) and (seed in (None, scenario.seed)):
        shipped = scenario.book_path()
        if shipped.is_file():
            return shipped
    events = generate(scenario, params, accounts=accounts, seed=seed)
    return write_book(out / "book.jsonl.zst", events)


async def run_scenario(
    scenario: Scenario,
    params: RiskParams,
    out_dir: Path,
    console: Console,
    *,
    speed: float | None = None,
    accounts: int | None = None,
    seed: int | None = None,
    report: bool = True,
    per_batch: int = 3,
) -> DemoRun:
    out = out_dir / scenario.name
    out.mkdir(parents=True, exist_ok=True)
    book = book_for(scenario, params, out, accounts, seed)
    alerts_path = out / "alerts.jsonl"
    alerts_path.write_bytes(b"")
    console.rule(scenario.title)
    console.print(f"book: {book}\nticks: {scenario.ticks_path()}", highlight=False, soft_wrap=True)
    options = ReplayOptions(
        files=(book, scenario.ticks_path()),
        speed=speed,
        window_ms=scenario.window_ms,
        keep_worst=report,
    )
    sinks: list[AlertSink] = [ConsoleAlertSink(console, per_batch=per_batch, firing_only=True),
             FileSink(alerts_path)]  # fmt: skip
    replay = Replay(
        params,
        options,
        alerts_config=AlertsConfig(stale_price_s=scenario.stale_price_s),
        sinks=sinks,
        progress=ReplayProgress(console),
        registry=CollectorRegistry(),
    )
    result = await replay.run()
    console.print(render(summary(result)), highlight=False, soft_wrap=True)
    path = write_report(result, out, title=scenario.title) if report else None
    console.print(f"alerts: {alerts_path}", highlight=False, soft_wrap=True)
    if path is not None:
        console.print(f"report: {path}", highlight=False, soft_wrap=True)
    return DemoRun(scenario, result, alerts_path, path)


__all__ = ["DemoRun", "book_for", "run_scenario"]
