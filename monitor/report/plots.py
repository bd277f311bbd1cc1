"""The report's figures, drawn with matplotlib (Agg, no display) as PNG bytes.

Each function takes plain arrays and returns the PNG of one figure; none keeps
global state (figures are built with :class:`matplotlib.figure.Figure`, not
pyplot), so they are safe to call from tests and threads.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from monitor.cascade.liqmap import LiquidationMap
from monitor.cascade.render import money

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

WIDTH_IN = 11.0
DPI = 100
STATUS_COLOURS = {"warning": "#e6a700", "critical": "#e06000", "liquidatable": "#c00018"}
MR_RANGE = (0.0, 1.5)


def _times(ts: I64) -> npt.NDArray[np.datetime64]:
    return ts.astype("datetime64[ms]")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _time_axis(ax: Axes) -> None:
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=UTC))  # type: ignore[no-untyped-call]
    ax.set_xlabel("event time (UTC)")
    ax.grid(True, alpha=0.3)


def _money_axis(ax: Axes) -> None:
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: money(v)))


def price_paths(ts: I64, prices: F64, symbols: Sequence[str]) -> bytes:
    """Each instrument's price, relative to its first price, in percent."""
    fig = Figure(figsize=(WIDTH_IN, 4.2))
    ax = fig.add_subplot()
    t = _times(ts)
    drawn = 0
    for k, sym in enumerate(symbols):
        col = prices[:, k]
        ok = np.isfinite(col)
        if not ok.any():
            continue
        base = col[ok][0]
        rel = np.where(ok, (col / base - 1.0) * 100.0, np.nan)
        ax.plot(t, rel, lw=1.4, label=f"{sym} (from {base:,.6g})")
        drawn += 1
    ax.axhline(0.0, color="#888", lw=0.8)
    ax.set_ylabel("move from the first price (%)")
    ax.set_title("Price paths")
    if drawn:
        ax.legend(loc="best", fontsize=8)
    _time_axis(ax)
    return _png(fig)


def accounts_by_status(ts: I64, counts: F64) -> bytes:
    """Accounts at warning, critical and liquidatable over time (healthy is the rest)."""
    fig = Figure(figsize=(WIDTH_IN, 4.0))
    ax = fig.add_subplot()
    t = _times(ts)
    for k, (label, colour) in enumerate(STATUS_COLOURS.items(), start=1):
        ax.step(t, counts[:, k], where="post", color=colour, lw=1.6, label=label)
    total = counts.sum(axis=1)
    ax.set_ylabel("accounts")
    n = int(total.max()) if total.size else 0
    ax.set_title(f"Accounts by status (of {n:,})")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=8)
    _time_axis(ax)
    return _png(fig)


def at_risk_over_time(ts: I64, at_risk: F64) -> bytes:
    """Healthy notional at risk: healthy positions of accounts at warning or beyond."""
    fig = Figure(figsize=(WIDTH_IN, 3.6))
    ax = fig.add_subplot()
    t = _times(ts)
    ax.fill_between(t, at_risk, step="post", color="#c00018", alpha=0.25)
    ax.step(t, at_risk, where="post", color="#c00018", lw=1.5)
    ax.set_ylabel("notional")
    ax.set_ylim(bottom=0)
    _money_axis(ax)
    ax.set_title("Healthy notional at risk (healthy positions of accounts at warning or beyond)")
    _time_axis(ax)
    return _png(fig)


def margin_ratio_histogram(
    ratios: F64, thresholds: Sequence[float], when: str, bins: int = 75
) -> bytes:
    """Distribution of margin ratios at one moment (accounts with positions)."""
    fig = Figure(figsize=(WIDTH_IN, 3.8))
    ax = fig.add_subplot()
    r = ratios[ratios > 0.0]
    gone = int(np.count_nonzero(~np.isfinite(r)))
    finite = r[np.isfinite(r)]
    over = int(np.count_nonzero(finite > MR_RANGE[1]))
    shown = np.clip(finite, MR_RANGE[0], MR_RANGE[1])
    ax.hist(shown, bins=bins, range=MR_RANGE, color="#4060a0", alpha=0.85)
    for thr, (label, colour) in zip(thresholds, STATUS_COLOURS.items(), strict=False):
        ax.axvline(thr, color=colour, lw=1.4, ls="--", label=f"{label} {thr:g}")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_xlabel(f"margin ratio MM / equity (above {MR_RANGE[1]:g} drawn at {MR_RANGE[1]:g})")
    ax.set_ylabel("accounts")
    ax.set_title(
        f"Margin ratios at the worst moment ({when}): {r.size:,} accounts, "
        f"{over:,} above {MR_RANGE[1]:g}, {gone:,} with no equity left"
    )
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, alpha=0.3)
    return _png(fig)


def liquidation_map_plot(
    m: LiquidationMap, when: str, underlyings: Sequence[str] | None = None
) -> bytes:
    """Notional liquidatable if one underlying moves, per underlying (those of
    ``underlyings`` only, when given)."""
    fig = Figure(figsize=(WIDTH_IN, 4.2))
    ax = fig.add_subplot()
    x = m.moves * 100.0
    drawn = 0
    for k, u in enumerate(m.underlyings):
        if not m.accounts[k].any() or (underlyings is not None and u not in underlyings):
            continue
        ax.plot(x, m.notional[k], marker="o", ms=2.5, lw=1.4, label=u)
        drawn += 1
    ax.axvline(0.0, color="#888", lw=0.8)
    ax.set_xlabel("move of the underlying (%), others held")
    ax.set_ylabel("cross notional liquidatable")
    _money_axis(ax)
    ax.set_title(f"Liquidation map at the worst moment ({when})")
    if drawn:
        ax.legend(loc="upper center", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no account liquidatable within the grid", transform=ax.transAxes,
                ha="center")  # fmt: skip
    ax.grid(True, alpha=0.3)
    return _png(fig)


__all__ = [
    "accounts_by_status",
    "at_risk_over_time",
    "liquidation_map_plot",
    "margin_ratio_histogram",
    "price_paths",
]
