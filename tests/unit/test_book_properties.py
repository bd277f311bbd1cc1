"""The incremental book always equals a from-scratch recomputation.

Tolerances. The book keeps account sums by deltas; a sum built from n
additions of terms no larger than S in magnitude differs from the exact sum
by at most about n * 2^-53 * S. A figure that is a small difference of large
terms (an equity of 3 made of a wallet of 20,000 and a loss of 19,997) can
therefore only be compared to 1e-9 of the largest magnitude its terms carried
(``scale``, tracked while the events are applied), not of its own value; per
position figures are computed afresh on every tick and compare to 1e-9 of
themselves. Figures derived from the sums carry that error through their
formula: a margin ratio MM / E by (dMM + MR dE) / E, a liquidation price by
the numerator's error over its denominator Q |mmr - side| (at least
Q (1 - max mmr)), a distance to liquidation by the gap function's error over
its slope (checked as: the book's move is a zero of the exact gap function).
A level or a list that depends on which side of a threshold a ratio falls is
compared only when the ratio is not within its tolerance of the threshold.
In the subnormal range (below 2^-1022) rounding errors are absolute, not
relative, so every comparison also allows a few dozen units of 2^-1074.
"""

from __future__ import annotations

import math
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.book import MarginBook
from monitor.book.layout import P_MM, P_STATUS, P_SYM, P_UPNL
from monitor.events import BalanceEvent, Event, PositionEvent, Tick
from monitor.instruments import parse_instruments
from monitor.risk.reference import ReferenceBook, isclose
from monitor.risk.report import account_report
from tests.conftest import SMALL

PARAMS = parse_instruments(SMALL, source="tests")
ACCOUNTS = ["A0", "A1", "A2", "A3"]
INSTRUMENTS = ["BTC-PERP", "ETH-PERP", "SOL-PERP"]
PRICE_SYMBOLS = [*INSTRUMENTS, "BTC", "ETH", "USDC"]
ASSETS = ["USDT", "USDC", "BTC", "ETH"]

prices = st.floats(min_value=0.5, max_value=400.0, allow_nan=False)
ts = st.integers(min_value=0, max_value=30)
ticks = st.builds(Tick, st.sampled_from(PRICE_SYMBOLS), prices, ts)
positions = st.builds(
    PositionEvent,
    account=st.sampled_from(ACCOUNTS),
    symbol=st.sampled_from(INSTRUMENTS),
    qty=st.one_of(st.just(0.0), st.floats(min_value=-200.0, max_value=200.0, allow_nan=False)),
    entry_price=prices,
    ts=ts,
    margin_mode=st.sampled_from(["cross", "cross", "isolated"]),
    isolated_margin=st.floats(min_value=0.0, max_value=3000.0),
    sub_account=st.sampled_from(["", "desk-1", "desk-2"]),
)
balances = st.builds(
    BalanceEvent,
    account=st.sampled_from(ACCOUNTS),
    asset=st.sampled_from(ASSETS),
    amount=st.floats(min_value=-2000.0, max_value=20000.0, allow_nan=False),
    ts=ts,
)
streams = st.lists(st.one_of(ticks, ticks, positions, positions, balances), max_size=80)


def assert_book_matches(book: MarginBook, ref: ReferenceBook) -> None:
    assert book.n_accounts == len(ref.accounts)
    for account, want in ref.evaluate_all().items():
        a = book.slot_of(account)
        assert a is not None
        got = (
            book.wallet_balance[a],
            book.unrealized_pnl[a],
            book.maintenance_margin[a],
            book.equity[a],
            book.margin_ratio[a],
        )
        exp = (
            want.wallet_balance,
            want.unrealized_pnl,
            want.maintenance_margin,
            want.equity,
            want.margin_ratio,
        )
        for g, e in zip(got[:4], exp[:4], strict=True):
            assert isclose(float(g), e), (account, got, exp)
        # MR = MM / E amplifies the rounding residue of the sums (up to ~1e-9 here)
        # by 1 / E: compare it within that bound, and the level where the ratio is
        # not within it of a threshold.
        mr, want_mr = float(book.margin_ratio[a]), want.margin_ratio
        if abs(want.equity) <= 1e-6 and book.cross_positions[a] > 0:
            # equity within the sums' tolerance of 0: MR = MM / E is anything from
            # MM / 1e-6 to infinite (E <= 0), so neither it nor the level compares
            pass
        elif math.isinf(want_mr) or want_mr == 0.0:
            assert mr == want_mr, (account, got, exp)
            assert int(book.status[a]) == want.status, account
        else:
            tol = 1e-9 * want_mr + 1e-9 * (1.0 + want_mr) / abs(want.equity)
            assert abs(mr - want_mr) <= tol, (account, got, exp)
            if all(abs(want_mr - t) > tol for t in (0.8, 0.9, 1.0)):
                assert int(book.status[a]) == want.status, account
        slots = book.positions_of(a)
        held = {PARAMS.symbols[int(book.pos_i[P_SYM, p])]: p for p in slots}
        assert set(held) == set(want.positions)
        for sym, p in held.items():
            wp = want.positions[sym]
            assert isclose(float(book.pos_f[P_UPNL, p]), wp.unrealized_pnl)
            assert isclose(float(book.pos_f[P_MM, p]), wp.maintenance_margin)
            assert int(book.pos_i[P_STATUS, p]) == wp.status


@settings(
    max_examples=int(os.environ.get("BOOK_PROPERTY_EXAMPLES", "1000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(streams)
def test_incremental_book_equals_from_scratch_after_any_event_sequence(events: list[Event]) -> None:
    book = MarginBook(PARAMS, accounts=1, positions=1)  # tiny capacities: growth is exercised
    ref = ReferenceBook(PARAMS)
    for ev in events:
        accepted = ref.apply(ev)
        assert (book.apply(ev) is None) == accepted, ev
    assert_book_matches(book, ref)
    # the exact re-derivation finds (almost) nothing to correct, and changes nothing
    assert book.resync() < 1e-6
    assert_book_matches(book, ref)
    book.compact()
    assert_book_matches(book, ref)


@settings(max_examples=400, deadline=None)
@given(streams, st.integers(min_value=1, max_value=10))
def test_conflated_batches_end_in_the_same_state_as_one_event_at_a_time(
    events: list[Event], batch: int
) -> None:
    one = MarginBook(PARAMS)
    rejected_one = sum(one.apply(ev) is not None for ev in events)
    many = MarginBook(PARAMS)
    rejected_many = 0
    for i in range(0, len(events), batch):
        rejected_many += len(many.apply_batch(events[i : i + batch]))
    ref = ReferenceBook(PARAMS)
    for ev in events:
        ref.apply(ev)
    assert_book_matches(many, ref)
    assert rejected_many == rejected_one


@settings(max_examples=100, deadline=None)
@given(streams)
def test_replaying_the_same_stream_again_leaves_the_state_unchanged(events: list[Event]) -> None:
    """Full-state messages are idempotent: a redelivered stream changes nothing."""
    book = MarginBook(PARAMS)
    for ev in events:
        book.apply(ev)
    equity, mm, status = book.equity.copy(), book.maintenance_margin.copy(), book.status.copy()
    for ev in events:
        book.apply(ev)
    assert status.tolist() == book.status.tolist()
    assert all(isclose(float(x), float(y)) for x, y in zip(equity, book.equity, strict=True))
    assert all(
        isclose(float(x), float(y)) for x, y in zip(mm, book.maintenance_margin, strict=True)
    )


def test_a_batch_over_many_instruments_matches_one_event_at_a_time() -> None:
    """Symbol ids beyond the number of assets, closes, reopens and collateral in one batch."""
    from monitor.bench.synthetic import synthetic_params

    params = synthetic_params()
    events: list[Event] = []
    for k, sym in enumerate(params.symbols[: params.n_instruments]):
        events.append(PositionEvent(f"A{k % 7}", sym, 1.0 + k, 10.0 + k, 1))
        events.append(Tick(sym, 11.0 + k, 2))
    events += [
        BalanceEvent("A1", "BTC", 0.5, 3),
        BalanceEvent("A2", "USDT", 100.0, 3),
        PositionEvent("A3", params.symbols[40], 0.0, 0.0, 4),  # close
        PositionEvent("A3", params.symbols[40], 2.0, 50.0, 3),  # older than the close
        PositionEvent("A3", params.symbols[40], -2.0, 50.0, 5),  # reopen
        Tick("BTC", 1000.0, 6),
        BalanceEvent("A1", "BTC", 0.0, 7),
        Tick("BTC", 2000.0, 8),
    ]
    one = MarginBook(params)
    rejected_one = [i for i, ev in enumerate(events) if one.apply(ev) is not None]
    batch = MarginBook(params)
    rejected_batch = [i for i, _ in batch.apply_batch(events)]
    assert rejected_one == rejected_batch == [len(events) - 5]
    pairs = ((one.equity, batch.equity), (one.maintenance_margin, batch.maintenance_margin))
    for a in range(one.n_accounts):
        for x, y in pairs:
            assert isclose(float(x[a]), float(y[a]))
    assert one.hold_len.tolist() == batch.hold_len.tolist()


REL = 1e-9
# Below 2^-1022 floats are subnormal and an operation's rounding error is absolute,
# up to half of 2^-1074, not relative: a few dozen operations' worth of it.
TINY = 64 * math.ulp(0.0)
THRESHOLDS = (0.8, 0.9, 1.0)
MAX_MMR = max(b.mmr for i in PARAMS.instruments for b in i.brackets)


def _account_scale(ref: ReferenceBook, account: str) -> float:
    """Magnitude of the terms in the account's sums now: collateral values, uPnL and
    maintenance of its cross positions."""
    acc = ref.accounts[account]
    out = 0.0
    for name, (amount, _) in acc.balances.items():
        out += abs(amount * ref.asset_price(name))
    for symbol, p in acc.positions.items():
        m = ref.mark(symbol, p.entry)
        out += abs(p.qty) * (abs(m - p.entry) + m) + abs(p.qty * p.entry)
    return out


def _close(got: float | None, want: float | None, scale: float, what: object) -> None:
    assert (got is None) == (want is None), what
    if got is None or want is None:
        return
    if math.isinf(want):
        assert got == want, what
        return
    assert abs(got - want) <= REL * max(abs(want), scale) + TINY, (what, got, want, scale)


def _near_threshold(mr: float, tol: float) -> bool:
    return any(abs(mr - t) <= tol for t in THRESHOLDS)


def assert_report_matches(book: MarginBook, ref: ReferenceBook, scales: dict[str, float]) -> None:
    for account in ref.accounts:
        a = book.slot_of(account)
        assert a is not None
        got = account_report(book, a)
        want = ref.report(account)
        sc = scales[account]
        for k in ("wallet_balance", "unrealized_pnl", "equity", "maintenance_margin"):
            _close(got[k], want[k], sc, (account, k))
        assert got["balances"] == want["balances"]
        # the ratio and what hangs on it
        mr_w, eq = want["margin_ratio"], want["equity"]
        has_cross = any(r["margin_mode"] == "cross" for r in want["positions"])
        if has_cross and abs(eq) <= REL * sc:
            # equity within the sums' error of 0 (a dust position on no collateral):
            # MR = MM / E is anything from MM / (1e-9 scale) to infinite
            settled = False
        elif math.isinf(mr_w) or mr_w == 0.0:
            assert got["margin_ratio"] == (None if math.isinf(mr_w) else 0.0), account
            settled = True
        else:
            mr_tol = REL * (mr_w + sc * (1.0 + mr_w) / abs(eq))
            assert abs(got["margin_ratio"] - mr_w) <= mr_tol, (account, got, want)
            settled = not _near_threshold(mr_w, mr_tol)
        if settled:
            assert got["status"] == want["status"], account
        # positions: per-position figures are fresh on every tick, so exact here
        assert [r["symbol"] for r in got["positions"]] == [r["symbol"] for r in want["positions"]]
        for g, w in zip(got["positions"], want["positions"], strict=True):
            what = (account, w["symbol"])
            for k in ("sub_account", "margin_mode", "qty", "entry_price", "mark_price", "healthy"):
                assert g[k] == w[k], (what, k, g[k], w[k])
            own = abs(w["qty"]) * (w["mark_price"] + w["entry_price"])
            for k in ("notional", "unrealized_pnl", "mmr", "maintenance_amount"):
                _close(g[k], w[k], abs(w[k]), (what, k))
            _close(g["maintenance_margin"], w["maintenance_margin"], own, (what, "mm"))
            # liquidation prices carry the sums' error over Q |mmr - side|
            lp_scale = sc / (abs(w["qty"]) * (1.0 - MAX_MMR))
            _lp_close(g["liquidation_price"], w["liquidation_price"], lp_scale, (what, "lp"))
            _lp_close(
                g["standalone_liquidation_price"],
                w["standalone_liquidation_price"],
                lp_scale,
                (what, "solo"),
            )
            if g["contagion_shift"] is not None and w["contagion_shift"] is not None:
                span = (
                    lp_scale + abs(w["liquidation_price"]) + abs(w["standalone_liquidation_price"])
                )
                _close(g["contagion_shift"], w["contagion_shift"], span, (what, "shift"))
            if w["margin_mode"] == "isolated":
                assert g["isolated_margin"] == w["isolated_margin"], what
                iso_mr = w["margin_ratio"]
                assert g["margin_ratio"] == (None if math.isinf(iso_mr) else iso_mr), what
                assert g["status"] == w["status"], what
        # contagion
        gc, wc = got["contagion"], want["contagion"]
        assert gc["culprits"] == wc["culprits"], account
        assert len(gc["culprit_sub_accounts"]) == len(wc["culprit_sub_accounts"])
        for g, w in zip(gc["culprit_sub_accounts"], wc["culprit_sub_accounts"], strict=True):
            assert g["sub_account"] == w["sub_account"]
            _close(g["unrealized_pnl"], w["unrealized_pnl"], sc, (account, "sub"))
        if settled:
            _close(gc["healthy_notional_at_risk"], wc["healthy_notional_at_risk"], 0.0, account)
            assert [v["symbol"] for v in gc["victims"]] == [v["symbol"] for v in wc["victims"]]
        # distance to liquidation: the book's move is a zero of the exact gap function
        gd, wd = got["distance_to_liquidation"], want["distance_to_liquidation"]
        assert set(gd) == set(wd), account
        for u in wd:
            for side in ("down", "up"):
                _distance_close(ref, account, u, gd[u][side], wd[u][side], sc, (account, u, side))


def _lp_close(got: float | None, want: float | None, scale: float, what: object) -> None:
    if (got is None) != (want is None):
        # only where the solution sits at 0, where "no positive price" begins
        assert abs(got if want is None else want) <= REL * scale, (what, got, want)  # type: ignore[operator]
        return
    _close(got, want, scale, what)


def _distance_close(
    ref: ReferenceBook,
    account: str,
    u: str,
    got: float | None,
    want: float | None,
    scale: float,
    what: object,
) -> None:
    def tol_gap(x: float) -> float:
        # the gap E - MM / L: its terms are at most the scale, the moving ones
        # scaled by (1 + x)
        return REL * scale * 3.0 * (1.0 + abs(x))

    if got is None or want is None:
        x = got if want is None else want
        assert x is None or abs(ref.liquidation_gap(account, u, x)) <= tol_gap(x), (what, got, want)
        return
    if abs(got - want) <= REL * max(1.0, abs(want)):
        return
    assert abs(ref.liquidation_gap(account, u, got)) <= tol_gap(got), (what, got, want)


@settings(
    max_examples=int(os.environ.get("BOOK_REPORT_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(streams, st.integers(min_value=0, max_value=8))
def test_every_risk_output_equals_a_from_scratch_report_after_any_event_sequence(
    events: list[Event], batch: int
) -> None:
    """Every figure of `monitor evaluate` (account sums, ratio and status; per position
    notional, bracket rate and amount, maintenance, uPnL, liquidation and standalone
    liquidation price, contagion shift, healthy; healthy notional at risk, culprits,
    victims; distance to liquidation per underlying) from the incremental book equals
    the plain-Python report computed from the raw positions and balances, whether the
    events come one at a time (batch 0) or in conflated batches."""
    book = MarginBook(PARAMS, accounts=1, positions=1)
    ref = ReferenceBook(PARAMS)
    scales: dict[str, float] = {}

    def track() -> None:
        for acc in ref.accounts:
            scales[acc] = max(scales.get(acc, 0.0), _account_scale(ref, acc))

    if batch == 0:
        for ev in events:
            assert (book.apply(ev) is None) == ref.apply(ev), ev
            track()
    else:
        for i in range(0, len(events), batch):
            chunk = events[i : i + batch]
            n_rejected = len(book.apply_batch(chunk))
            assert n_rejected == sum(not ref.apply(ev) for ev in chunk)
            track()
    assert_report_matches(book, ref, scales)
    book.resync()  # the exact re-derivation, then a fresh layout, change no figure
    assert_report_matches(book, ref, scales)
    book.compact()
    assert_report_matches(book, ref, scales)
