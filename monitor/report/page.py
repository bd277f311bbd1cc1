"""The HTML page of a replay report: key figures, the plots as embedded PNG
(``data:`` URIs, so the page is one file that opens anywhere) and the table of
the largest contagion events (culprits -> victims, by notional)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np

from monitor.cascade.liqmap import DEFAULT_MOVES, liquidation_map
from monitor.cascade.render import money
from monitor.cascade.snapshot import BookSnapshot
from monitor.errors import InputError
from monitor.replay.driver import ReplayResult
from monitor.replay.progress import event_time_text
from monitor.replay.summary import span_text, summary
from monitor.report import plots

REPORT_NAME = "report.html"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1160px;color:#1c1c1c;background:#fff}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em}
.sub{color:#555;margin-top:0} figure{margin:12px 0} img{max-width:100%;border:1px solid #ddd}
table{border-collapse:collapse;font-size:.86em;width:100%} td,th{border-bottom:1px solid #e3e3e3;
padding:4px 6px;text-align:left;vertical-align:top} th{background:#f4f4f4}
.num{text-align:right;white-space:nowrap} .kv td:first-child{color:#555;width:34%}
.na{color:#555;font-style:italic}
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _pnl(x: float) -> str:
    return money(x)


def _contagion_rows(result: ReplayResult) -> str:
    rows = []
    for e in result.recorder.top_contagion():
        culprits = "<br>".join(
            html.escape(f"{c['symbol']}" + (f" ({c['sub_account']})" if c["sub_account"] else "")
                        + f" {_pnl(c['unrealized_pnl'])}")
            for c in e.culprits
        ) or "-"  # fmt: skip
        victims = "<br>".join(
            html.escape(f"{v['symbol']}" + (f" ({v['sub_account']})" if v["sub_account"] else "")
                        + f" {money(v['notional'])}")
            for v in e.victims
        ) or "-"  # fmt: skip
        rows.append(
            f"<tr><td>{html.escape(event_time_text(e.ts))}</td><td>{html.escape(e.account)}</td>"
            f"<td>{html.escape(e.severity)}</td><td>{culprits}</td><td>{victims}</td>"
            f'<td class="num">{money(e.healthy_notional_at_risk)}</td></tr>'
        )
    if not rows:
        return "<p>No contagion alert fired.</p>"
    return (
        "<table><tr><th>event time (UTC)</th><th>account</th><th>level</th>"
        "<th>culprits (losing positions, uPnL)</th><th>victims (healthy positions, notional)</th>"
        '<th class="num">healthy notional at risk</th></tr>' + "".join(rows) + "</table>"
    )


def _key_figures(doc: dict[str, Any]) -> str:
    t = event_time_text
    peaks = doc["peak_accounts"]
    items = [
        ("events", f"{doc['events']:,} ({doc['ticks']:,} ticks, {doc['account_events']:,} "
                   "account events)"),
        ("event time", span_text(doc).removeprefix(" from ").removeprefix(", ") or "none"),
        ("accounts", f"{doc['accounts']:,}"),
        ("rejected lines", f"{doc['rejected']['total']:,}"),
        ("alerts", f"{doc['alerts']['total']:,}"),
    ]  # fmt: skip
    for s in ("warning", "critical", "liquidatable"):
        if s in peaks:
            items.append((f"peak accounts {s}", f"{peaks[s]['accounts']:,} at {t(peaks[s]['ts'])}"))
    top = doc["largest_healthy_notional_at_risk"]
    if top is not None:
        items.append(("largest healthy notional at risk",
                      f"{money(top['notional'])} ({top['account']}, {t(top['ts'])})"))  # fmt: skip
    w = doc["worst_account"]
    if w is not None:
        mr = (
            "no equity left"
            if w["margin_ratio"] is None
            else f"margin ratio {w['margin_ratio']:.3f}"
        )
        items.append(("worst account", f"{w['account']}: {mr} at {t(w['ts'])}"))
    cells = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in items
    )
    return f'<table class="kv">{cells}</table>'


def _na(why: str) -> str:
    return f'<p class="na">Not available: {html.escape(why)}.</p>'


def _ticked(result: ReplayResult) -> list[bool]:
    """Per symbol: whether a tick of it was applied."""
    return [bool(t >= 0) for t in result.book.sym_ts.tolist()]


def _price_columns(result: ReplayResult) -> list[int]:
    """The symbols whose price paths are drawn: every instrument that ticked, and
    a symbol that only prices collateral when it ticked and no instrument on
    its underlying did (a fixed-price or never-ticked asset is a flat line)."""
    p = result.params
    ticked = _ticked(result)
    ni = p.n_instruments
    drawn = [s for s in range(ni) if ticked[s]]
    moved = {p.instruments[s].underlying for s in drawn}
    for s in range(ni, len(p.symbols)):
        unders = {a.underlying for a in p.assets if a.price_symbol == p.symbols[s]}
        if ticked[s] and not unders & moved:
            drawn.append(s)
    return drawn


def _map_underlyings(result: ReplayResult, snap: BookSnapshot) -> list[str]:
    """Underlyings worth a line on the liquidation map: those positions are held
    on, and those whose prices ticked (a collateral-only asset that never ticks,
    USDC at its fixed price, moves nothing in the replay)."""
    p = result.params
    held = {p.instruments[s].underlying for s in np.unique(snap.sym).tolist()}
    ticked = _ticked(result)
    for k, a in enumerate(p.assets):
        s = int(p.asset_price_sym[k])
        if a.underlying is not None and s >= 0 and ticked[s]:
            held.add(a.underlying)
    for s in range(p.n_instruments):
        if ticked[s]:
            held.add(p.instruments[s].underlying)
    return [u for u in p.underlyings if u in held]


def render_page(result: ReplayResult, title: str | None = None) -> str:
    """The report page as HTML text. Every section is there; one without data
    says why it is not available."""
    rec = result.recorder
    doc = summary(result)
    params = result.params
    figures: list[str] = []
    ts, risk = rec.risk.arrays()
    no_sample = "no event was applied, so the book was never sampled"
    figures.append("<h2>Price paths</h2>")
    cols = _price_columns(result)
    if ts.size and cols:
        symbols = [params.symbols[s] for s in cols]
        figures.append(_img(plots.price_paths(ts, risk[:, 1:][:, cols], symbols), "price paths"))
    else:
        figures.append(_na(no_sample if not ts.size else "no symbol was ticked"))
    sts, counts = rec.status.arrays()
    figures.append("<h2>Accounts by status</h2>")
    if sts.size:
        figures.append(_img(plots.accounts_by_status(sts, counts), "accounts by status"))
    else:
        figures.append(_na(no_sample))
    figures.append("<h2>Healthy notional at risk</h2>")
    if ts.size:
        figures.append(_img(plots.at_risk_over_time(ts, risk[:, 0]), "healthy notional at risk"))
    else:
        figures.append(_na(no_sample))
    w = rec.worst
    if w is None:
        why = no_sample
    elif w.snapshot is None or w.margin_ratio is None:
        why = "the book was not kept at the worst moment (replay with --report to keep it)"
    else:
        why = ""
    figures.append("<h2>Margin ratios at the worst moment</h2>")
    if w is not None and w.margin_ratio is not None and not why:
        when = event_time_text(w.ts)
        thr = result.book.thresholds
        figures.append(_img(plots.margin_ratio_histogram(
            w.margin_ratio, (thr.warning, thr.critical, thr.liquidatable), when),
            "margin-ratio distribution"))  # fmt: skip
    else:
        figures.append(_na(why))
    figures.append("<h2>Liquidation map at the worst moment</h2>")
    if w is not None and w.snapshot is not None and not why:
        when = event_time_text(w.ts)
        unders = _map_underlyings(result, w.snapshot)
        m = liquidation_map(w.snapshot, DEFAULT_MOVES)
        figures.append(_img(plots.liquidation_map_plot(m, when, unders), "liquidation map"))
        left = [u for u in params.underlyings if u not in unders]
        if left:
            figures.append(
                '<p class="sub">Not drawn (no positions on them and no ticks of their prices): '
                + html.escape(", ".join(left)) + ".</p>"
            )  # fmt: skip
    else:
        figures.append(_na(why))
    heading = title or "Replay report"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(heading)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(heading)}</h1>"
        f'<p class="sub">{html.escape(", ".join(result.files))}</p>'
        + _key_figures(doc)
        + "".join(figures)
        + "<h2>Largest contagion events (culprits &rarr; victims, by notional)</h2>"
        + _contagion_rows(result)
        + "</body></html>\n"
    )


def write_report(result: ReplayResult, out_dir: str | Path, title: str | None = None) -> Path:
    """Write ``out_dir/report.html``; returns its path."""
    d = Path(out_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
        path = d / REPORT_NAME
        path.write_text(render_page(result, title), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write the report to {d}: {exc.strerror or exc}") from exc
    return path


__all__ = ["REPORT_NAME", "render_page", "write_report"]
