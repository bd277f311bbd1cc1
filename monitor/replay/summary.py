"""The end-of-replay summary, as JSON-ready data and as text.

Events and rejections (by reason, with the file and line of the first few),
the peak number of accounts per status, when each account first reached each
level, alerts by kind, the largest healthy notional at risk and its account,
and the worst account (the highest margin ratio reached).
"""

from __future__ import annotations

import math
from typing import Any

from monitor.cascade.render import money
from monitor.replay.driver import ReplayResult
from monitor.replay.progress import event_time_text
from monitor.replay.recorder import LEVELS
from monitor.risk.report import account_report

Json = dict[str, Any]
SHOWN_ACCOUNTS = 10


def summary(result: ReplayResult) -> Json:
    """Everything the summary says, as plain data (deterministic except ``timing``)."""
    rec = result.recorder
    st = result.stats
    book = result.book
    rejected = {
        reason: {
            "count": count,
            "first": [
                {"file": r.file, "line": r.line, "detail": r.detail}
                for r in rec.first_rejected.get(reason, [])
            ],
        }
        for reason, count in sorted(rec.rejected.items())
    }
    kinds = sorted({k for k, _ in rec.alerts})
    alerts = {
        k: {
            "firing": rec.alerts.get((k, "firing"), 0),
            "resolved": rec.alerts.get((k, "resolved"), 0),
        }
        for k in kinds
    }
    reached = {
        acct: dict(zip(LEVELS, row, strict=True))
        for acct, row in sorted(
            rec.first_reached.items(),
            key=lambda kv: (min((t for t in kv[1] if t is not None), default=0), kv[0]),
        )
    }
    top = rec.top_at_risk
    worst: Json | None = None
    if rec.worst_account is not None:
        mr, eq, acct, ts = rec.worst_account
        slot = book.slot_of(acct)
        rep = account_report(book, slot) if slot is not None else None
        worst = {
            "account": acct,
            "ts": ts,
            "margin_ratio": mr if math.isfinite(mr) else None,
            "equity": eq,
            "reached": reached.get(acct),
            "at_end": _brief(rep) if rep is not None else None,
        }
    wm = rec.worst
    return {
        "files": result.files,
        "events": st.events,
        "ticks": st.ticks,
        "account_events": st.account_events,
        "warmup_events": st.warmup_events,
        "evaluations": st.evaluations,
        "event_time": {"first": st.first_ts, "last": st.last_ts},
        "accounts": book.n_accounts,
        "rejected": {"total": sum(rec.rejected.values()), "by_reason": rejected},
        "peak_accounts": {s: {"accounts": v, "ts": t} for s, (v, t) in rec.peaks.items()},
        "accounts_reaching": rec.reached_counts(),
        "first_reached": reached,
        "alerts": {"total": st.alerts, "by_kind": alerts},
        "largest_healthy_notional_at_risk": (
            None if top is None else {"notional": top[0], "account": top[1], "ts": top[2]}
        ),
        "worst_moment": (
            None
            if wm is None
            else {
                "ts": wm.ts,
                "healthy_notional_at_risk": wm.at_risk,
                "accounts_not_healthy": wm.not_healthy,
            }
        ),
        "worst_account": worst,
        "timing": {"seconds": st.seconds, "events_per_s": st.events_per_s},
    }


def _brief(rep: Json) -> Json:
    c = rep["contagion"]
    return {
        "status": rep["status"],
        "margin_ratio": rep["margin_ratio"],
        "equity": rep["equity"],
        "maintenance_margin": rep["maintenance_margin"],
        "healthy_notional_at_risk": c["healthy_notional_at_risk"],
        "culprits": c["culprits"][:3],
        "victims": [
            {"symbol": v["symbol"], "sub_account": v["sub_account"], "notional": v["notional"]}
            for v in c["victims"][:3]
        ],
    }


def span_text(doc: Json) -> str:
    """`` from <first> to <last> UTC``, or why there is no such span."""
    ev = doc["event_time"]
    if ev["first"] is None or ev["last"] is None:
        return ", no event time read" if doc["events"] else ""
    return f" from {event_time_text(ev['first'])} to {event_time_text(ev['last'])} UTC"


def render(doc: Json) -> str:
    """The summary as text for a terminal."""
    t = event_time_text
    lines = [
        "Replay summary",
        f"  files: {', '.join(doc['files'])}",
        f"  events: {doc['events']:,} ({doc['ticks']:,} ticks, {doc['account_events']:,} account "
        f"events){span_text(doc)}",
    ]
    if doc["warmup_events"]:
        lines.append(f"  before --from (state only, no alerts): {doc['warmup_events']:,} events")
    timing = doc["timing"]
    lines.append(
        f"  accounts: {doc['accounts']:,}; {doc['evaluations']:,} evaluations in "
        f"{timing['seconds']:.2f} s ({timing['events_per_s']:,.0f} events/s)"
    )
    rej = doc["rejected"]
    lines.append(f"  rejected: {rej['total']:,}")
    for reason, r in rej["by_reason"].items():
        lines.append(f"    {reason}: {r['count']:,}")
        for f in r["first"]:
            lines.append(f"      {f['file']}:{f['line']}: {f['detail']}")
    lines.append("  peak accounts by status:")
    for s, p in doc["peak_accounts"].items():
        lines.append(f"    {s:<13} {p['accounts']:>8,}  at {t(p['ts'])}")
    reach = doc["accounts_reaching"]
    lines.append("  accounts reaching: " + ", ".join(f"{lvl} {reach[lvl]:,}" for lvl in LEVELS))
    first = list(doc["first_reached"].items())
    if first:
        lines.append(f"  first to reach each level (earliest {min(SHOWN_ACCOUNTS, len(first))}):")
        for acct, row in first[:SHOWN_ACCOUNTS]:
            cells = "  ".join(f"{lvl} {t(row[lvl]) if row[lvl] is not None else '-'}"
                              for lvl in LEVELS)  # fmt: skip
            lines.append(f"    {acct:<16} {cells}")
        if len(first) > SHOWN_ACCOUNTS:
            lines.append(
                f"    ... and {len(first) - SHOWN_ACCOUNTS:,} more (--summary-json has all)"
            )
    al = doc["alerts"]
    kinds = ", ".join(
        f"{k} {v['firing']:,} firing / {v['resolved']:,} resolved" for k, v in al["by_kind"].items()
    )
    lines.append(f"  alerts: {al['total']:,}" + (f" ({kinds})" if kinds else ""))
    top = doc["largest_healthy_notional_at_risk"]
    if top is not None:
        lines.append(
            f"  largest healthy notional at risk: {money(top['notional'])} "
            f"({top['account']}, {t(top['ts'])})"
        )
    wm = doc["worst_moment"]
    if wm is not None:
        lines.append(
            f"  worst moment: {t(wm['ts'])}: healthy notional at risk "
            f"{money(wm['healthy_notional_at_risk'])}, {wm['accounts_not_healthy']:,} accounts "
            "beyond healthy"
        )
    w = doc["worst_account"]
    if w is not None:
        mr = (
            "infinite (no equity left)" if w["margin_ratio"] is None else f"{w['margin_ratio']:.3f}"
        )
        lines.append(
            f"  worst account: {w['account']}: margin ratio {mr}, equity {money(w['equity'])} "
            f"at {t(w['ts'])}"
        )
        end = w["at_end"]
        if end is not None:
            culprits = ", ".join(
                f"{c['symbol']}"
                + (f" ({c['sub_account']})" if c["sub_account"] else "")
                + f" {money(c['unrealized_pnl'])}"
                for c in end["culprits"]
            )
            lines.append(
                f"    at the end: {end['status']}, equity {money(end['equity'])}"
                + (f"; culprits: {culprits}" if culprits else "")
            )
    return "\n".join(lines)


__all__ = ["render", "span_text", "summary"]
