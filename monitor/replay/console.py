"""Alerts as readable one-line messages on a terminal (the demo's live view).

An alert sink like the others (:class:`~monitor.sinks.base.AlertSink`): it
prints each alert as it is published, coloured by severity when the output
is a terminal. A crash can fire hundreds of alerts at one moment, so at most
``per_batch`` lines are printed per evaluation, followed by a count of the
rest by kind and severity; ``firing_only`` leaves resolutions out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape

from monitor.cascade.render import money
from monitor.replay.progress import event_time_text

_STYLE = {"warning": "yellow", "critical": "dark_orange", "liquidatable": "bold red"}


def alert_line(a: Any) -> str:
    """``2021-05-19 13:21:29.300  liquidatable firing  acct-00042  MR 1.021 ...``"""
    sev = str(getattr(a, "severity", ""))
    state = str(getattr(a, "state", ""))
    kind = str(getattr(a, "kind", ""))
    account = str(getattr(a, "account", "") or "market")
    parts = [f"{event_time_text(int(a.ts))}  {kind:<10} {sev:<12} {state:<8} {account}"]
    iso = getattr(a, "isolated_symbol", None)
    if iso:
        parts.append(f"isolated {iso}")
    mr = getattr(a, "margin_ratio", None)
    if kind in ("margin", "contagion"):
        parts.append("MR inf" if mr is None else f"MR {mr:.3f}")
        eq = getattr(a, "equity", None)
        if eq is not None:
            parts.append(f"equity {money(eq)}")
    trig = getattr(a, "trigger", None)
    if trig is not None and trig.price is not None:
        parts.append(f"{trig.symbol} {trig.price:,.6g}")
    if state == "firing":
        culprits = list(getattr(a, "culprits", ()))[:2]
        if culprits:
            parts.append("culprits " + ", ".join(
                f"{c.symbol}" + (f"({c.sub_account})" if c.sub_account else "")
                + f" {money(c.unrealized_pnl)}" for c in culprits))  # fmt: skip
        victims = list(getattr(a, "victims", ()))[:2]
        if victims and kind == "contagion":
            parts.append("victims " + ", ".join(
                f"{v.symbol}" + (f"({v.sub_account})" if v.sub_account else "")
                + f" {money(v.notional)}" for v in victims))  # fmt: skip
    return "  ".join(parts)


class ConsoleAlertSink:
    """Readable alert lines on ``console`` (stdout by default)."""

    name = "console"
    durable = False

    def __init__(
        self, console: Console | None = None, *, per_batch: int = 6, firing_only: bool = False
    ) -> None:
        self.console = console if console is not None else Console(highlight=False)
        self.per_batch = per_batch
        self.firing_only = firing_only
        self.printed = 0
        self.received = 0

    async def start(self) -> None:
        return None

    async def publish(self, alerts: Sequence[Any]) -> None:
        self.received += len(alerts)
        if self.firing_only:
            alerts = [a for a in alerts if a.state == "firing"]
        # the highest severities first, so a burst shows its worst lines
        rank = {"liquidatable": 0, "critical": 1, "warning": 2}
        ordered = sorted(alerts, key=lambda a: (a.state != "firing", rank.get(str(a.severity), 3)))
        shown = ordered[: self.per_batch]
        for a in shown:
            style = _STYLE.get(str(a.severity), "") if a.state == "firing" else "green"
            text = escape(alert_line(a))
            self.console.print(f"[{style}]{text}[/]" if style else text, soft_wrap=True)
        self.printed += len(shown)
        rest = ordered[self.per_batch :]
        if rest:
            counts = Counter(f"{a.kind} {a.severity} {a.state}" for a in rest)
            detail = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            self.console.print(f"  ... and {len(rest)} more alerts at this time: {escape(detail)}",
                               style="dim", soft_wrap=True)  # fmt: skip

    async def flush(self, timeout_s: float) -> None:
        return None

    async def close(self) -> None:
        return None


__all__ = ["ConsoleAlertSink", "alert_line"]
