"""The alert engine's compiled passes (monitor.alerts.kernels) give, bit for
bit, what the Python walks they replaced gave: those walks are kept here as
the oracles, and both run on random books (cross and isolated positions,
sub-accounts, multi-asset collateral, symbols never ticked, closed positions
leaving free slots)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.alerts import kernels as K
from monitor.alerts.attribution import attribute, cross_exposure
from monitor.alerts.config import AlertsConfig
from monitor.alerts.contagion import contagion_holds
from monitor.alerts.engine import _rules
from monitor.alerts.fsm import Hysteresis, advance, advance_many, stepper, top
from monitor.alerts.model import Culprit, Victim
from monitor.book import MarginBook
from monitor.book.layout import (
    A_HEAD,
    A_MM,
    A_NCROSS,
    A_STATUS,
    A_UPNL,
    A_WB,
    M_HWM,
    MODE_CROSS,
    MODE_ISOLATED,
    P_ACCT,
    P_ENTRY,
    P_ISO_MARGIN,
    P_MM,
    P_MODE,
    P_NEXT,
    P_QTY,
    P_STATUS,
    P_SUB,
    P_SYM,
    P_UPNL,
)
from monitor.events import BalanceEvent, PositionEvent, Tick
from monitor.instruments import RiskParams, parse_instruments
from monitor.risk.levels import Status, margin_ratio, margin_ratios
from monitor.risk.liquidation import liquidation_price
from tests.conftest import SMALL

PARAMS = parse_instruments(SMALL, source="tests")
START = {"BTC-PERP": 20_000.0, "ETH-PERP": 1_500.0, "SOL-PERP": 20.0, "BTC": 20_000.0,
         "ETH": 1_500.0, "USDC": 1.0}  # fmt: skip


def random_book(seed: int, accounts: int, params: RiskParams = PARAMS) -> MarginBook:
    """Accounts with 1-3 positions (a fifth isolated), USDT and some BTC, ETH or
    USDC collateral, prices moved so some accounts are at risk; SOL-PERP is left
    without a tick in half the books (marked at entry), and some positions closed."""
    rng = random.Random(seed)
    book = MarginBook(params, AlertsConfig().thresholds(), accounts=16, positions=16)
    events: list[object] = []
    perps = ["BTC-PERP", "ETH-PERP", "SOL-PERP"]
    for a in range(accounts):
        acct = f"K{a:04d}"
        usdt = rng.uniform(50.0, 5_000.0)
        events.append(BalanceEvent(acct, "USDT", usdt, 1))
        for asset in ("BTC", "ETH", "USDC"):
            if rng.random() < 0.25:
                events.append(BalanceEvent(acct, asset, usdt * rng.random() / START[asset], 1))
        for sym in rng.sample(perps, rng.randint(1, 3)):
            qty = usdt * rng.uniform(0.5, 12.0) / START[sym] * rng.choice((1.0, -1.0))
            iso = rng.random() < 0.2
            events.append(PositionEvent(
                acct, sym, qty, START[sym] * rng.uniform(0.95, 1.05), 2,
                margin_mode="isolated" if iso else "cross",
                isolated_margin=abs(qty) * START[sym] / rng.uniform(3.0, 25.0) if iso else 0.0,
                sub_account=rng.choice(("", "desk-1", "desk-2")),
            ))  # fmt: skip
    ticked = ["BTC-PERP", "ETH-PERP", "BTC", "ETH", "USDC"]
    if seed % 2:
        ticked.append("SOL-PERP")
    for k, sym in enumerate(ticked):
        events.append(Tick(sym, START[sym] * rng.uniform(0.9, 1.1), 3 + k))
    for a in rng.sample(range(accounts), accounts // 10):  # closed: free slots, shorter lists
        events.append(PositionEvent(f"K{a:04d}", rng.choice(perps), 0.0, 1.0, 20))
    for e in events:
        assert book.apply(e) is None  # type: ignore[arg-type]
    return book


# ---------------------------------------------------------------- the oracles


def py_exposure(book: MarginBook, slots: np.ndarray, band: float) -> tuple[list, list, list]:  # type: ignore[type-arg]
    """The Python walk (up to 512 accounts) and bincount (above) cross_exposure had."""
    n = slots.shape[0]
    healthy, near, total = np.zeros(n), np.zeros(n), np.zeros(n)
    pf, pi = book.pos_f, book.pos_i
    if n <= 512:
        for j, a in enumerate(slots.tolist()):
            for p in book.positions_of(a):
                if pi[P_MODE, p] != MODE_CROSS:
                    continue
                s = int(pi[P_SYM, p])
                x = abs(float(pf[P_QTY, p])) * book.mark_of(s, float(pf[P_ENTRY, p]))
                pu = float(pf[P_UPNL, p])
                total[j] += x
                if pu >= 0.0:
                    healthy[j] += x
                if pu >= -band * x:
                    near[j] += x
        return healthy.tolist(), near.tolist(), total.tolist()
    n_acc = book.n_accounts
    wanted = np.zeros(n_acc, dtype=bool)
    wanted[slots] = True
    alive = book.alive_positions()
    acct = pi[P_ACCT, alive].astype(np.int64)
    sel = wanted[acct] & (pi[P_MODE, alive] == MODE_CROSS)
    pos, acct = alive[sel], acct[sel]
    price = book.sym_price[pi[P_SYM, pos]]
    price = np.where(np.isnan(price), pf[P_ENTRY, pos], price)
    notional = np.abs(pf[P_QTY, pos]) * price
    upnl = pf[P_UPNL, pos]
    h = np.bincount(acct, weights=np.where(upnl >= 0.0, notional, 0.0), minlength=n_acc)
    b = np.bincount(acct, weights=np.where(upnl >= -band * notional, notional, 0.0),
                    minlength=n_acc)  # fmt: skip
    t = np.bincount(acct, weights=notional, minlength=n_acc)
    return h[slots].tolist(), b[slots].tolist(), t[slots].tolist()


def py_attribute(book: MarginBook, a: int, level: int) -> tuple[tuple, tuple, float]:  # type: ignore[type-arg]
    """attribute() as it walked the positions in Python."""
    params = book.params
    symbols, subs = params.symbols, book.sub_labels
    wb, upnl, mm = book.acc_f[(A_WB, A_UPNL, A_MM), a].tolist()
    losers, healthy = [], []
    for p in book.positions_of(a):
        ri = book.pos_i[:, p].tolist()
        if ri[P_MODE] != MODE_CROSS:
            continue
        s, sub = ri[P_SYM], ri[P_SUB]
        rf = book.pos_f[:, p].tolist()
        qty, entry, pu, pmm = rf[P_QTY], rf[P_ENTRY], rf[P_UPNL], rf[P_MM]
        if pu < 0.0:
            losers.append((pu, symbols[s], subs[sub]))
        elif level >= Status.WARNING:
            healthy.append((abs(qty) * book.mark_of(s, entry), p, qty, entry, pu, pmm))
    losers.sort()
    victims = []
    for n, p, qty, entry, pu, pmm in sorted(healthy, key=lambda t: (-t[0], t[1])):
        s = int(book.pos_i[P_SYM, p])
        brackets = params.instruments[s].brackets
        lp = liquidation_price(qty, entry, wb, mm - pmm, upnl - pu, brackets)
        solo = liquidation_price(qty, entry, wb, 0.0, 0.0, brackets)
        shift = None if lp is None or solo is None else lp - solo
        victims.append(Victim(symbols[s], subs[int(book.pos_i[P_SUB, p])], n, pu, lp, shift))
    culprits = tuple(Culprit(sym, sub, pu) for pu, sym, sub in losers)
    return culprits, tuple(victims), float(sum(v.notional for v in victims))


def py_newest(book: MarginBook, a: int, ticks: dict[int, Tick]) -> int:
    """The engine's trigger choice over ``_cross_symbols`` as it was written."""
    syms = [int(book.pos_i[P_SYM, p]) for p in book.positions_of(a)
            if book.pos_i[P_MODE, p] == MODE_CROSS]  # fmt: skip
    for k in np.flatnonzero(book.bal[:, a] != 0.0).tolist():
        if book.params.asset_price_sym[k] >= 0:
            syms.append(int(book.params.asset_price_sym[k]))
    best: Tick | None = None
    for s in syms:
        t = ticks.get(s)
        if t is not None and (
            best is None or t.ts > best.ts or (t.ts == best.ts and t.symbol > best.symbol)
        ):
            best = t
    return -1 if best is None else book.params.symbol_id[best.symbol]


def bits(x: object) -> bytes:
    return repr(x).encode()  # float repr round-trips: equal reprs, equal bits


# ---------------------------------------------------------------- the properties


@pytest.mark.parametrize("seed", range(6))
def test_exposure_walk_and_slot_pass_match_the_python_ones(seed: int) -> None:
    book = random_book(seed, 700)
    rng = np.random.default_rng(seed)
    for size in (1, 17, 512, 513, 700):
        slots = np.sort(rng.choice(book.n_accounts, size, replace=False)).astype(np.int64)
        for band in (0.0, 0.002, 0.5):
            got = [x.tolist() for x in cross_exposure(book, slots, band)]
            assert bits(got) == bits(list(py_exposure(book, slots, band)))


@pytest.mark.parametrize("seed", range(6))
def test_attribution_matches_the_python_walk(seed: int) -> None:
    book = random_book(seed, 120)
    for a in range(book.n_accounts):
        for level in range(4):
            assert bits(attribute(book, a, level)) == bits(py_attribute(book, a, level))


configs = st.builds(
    AlertsConfig,
    hysteresis=st.sampled_from([0.0, 0.05, 0.2]),
    contagion_min_notional=st.sampled_from([0.0, 100.0, 5_000.0]),
    contagion_min_share=st.sampled_from([0.0, 0.1, 0.6, 1.0]),
    contagion_hysteresis=st.sampled_from([0.0, 0.2, 0.9]),
    contagion_upnl_band=st.sampled_from([0.0, 0.002, 0.3]),
)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 10_000), configs, st.integers(1, 150))
def test_the_cross_pass_matches_the_array_code_it_replaced(
    seed: int, cfg: AlertsConfig, size: int
) -> None:
    book = random_book(seed, 150)
    rng = np.random.default_rng(seed)
    n = book.n_accounts
    cand = rng.choice(n, min(size, n), replace=False).astype(np.int64)  # any order
    lvl = rng.integers(0, 4, n).astype(np.int8)
    act = rng.integers(0, 8, (2, n)).astype(np.uint8)
    hyst = Hysteresis((cfg.warning_ratio, cfg.critical_ratio, cfg.liquidatable_ratio),
                      cfg.hysteresis)  # fmt: skip
    # the numpy pipeline of AlertEngine._cross
    mm = book.acc_f[A_MM, cand]
    eq = book.acc_f[A_WB, cand] + book.acc_f[A_UPNL, cand]
    mr = margin_ratios(mm, eq, book.acc_i[A_NCROSS, cand] > 0)
    new = advance_many(lvl[cand], mr, hyst)
    lc = np.zeros_like(new)
    at = np.flatnonzero(new >= Status.WARNING)
    if at.shape[0]:
        healthy, near, total = py_exposure(book, cand[at], cfg.contagion_upnl_band)
        firing = act[1, cand[at]] != 0
        ok = contagion_holds(np.array(healthy), np.array(near), np.array(total), firing, cfg)
        lc[at] = np.where(ok, new[at], 0)
    tops = np.array([top(m) for m in range(8)])
    need = np.flatnonzero((tops[act[0, cand]] != new) | (tops[act[1, cand]] != lc))
    band = new > book.acc_i[A_STATUS, cand]
    expected_lvl = lvl.copy()
    expected_lvl[cand] = new

    got = K.cross_pass(cand, lvl, act, book.acc_f, book.acc_i, book.pos_f, book.pos_i,
                       book.sym_price, int(book.meta[M_HWM]), n, _rules(cfg))  # fmt: skip
    assert bits(got[0].tolist()) == bits(mr.tolist())
    assert got[1].tolist() == new.tolist() and got[2].tolist() == lc.tolist()
    assert got[3].tolist() == need.tolist() and got[4].tolist() == band.tolist()
    assert lvl.tolist() == expected_lvl.tolist()


def test_the_cross_pass_sees_accounts_enter_and_hold_contagion() -> None:
    """The random configurations above do reach every branch: here, that a book
    at risk has accounts whose contagion level is set and others whose is not."""
    book = random_book(3, 150)
    cfg = AlertsConfig(contagion_min_share=0.6)
    n = book.n_accounts
    lvl = np.zeros(n, dtype=np.int8)
    act = np.zeros((2, n), dtype=np.uint8)
    _, new, lc, need, _ = K.cross_pass(
        np.arange(n, dtype=np.int64), lvl, act, book.acc_f, book.acc_i, book.pos_f, book.pos_i,
        book.sym_price, int(book.meta[M_HWM]), n, _rules(cfg),
    )  # fmt: skip
    at_risk = new >= 1
    assert at_risk.any() and (lc[at_risk] == 0).any() and (lc[at_risk] > 0).any()
    assert need.shape[0] == int(np.count_nonzero(at_risk))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.data())
def test_the_newest_tick_of_an_account_is_the_one_the_python_walk_chose(
    seed: int, data: st.DataObject
) -> None:
    book = random_book(seed, 60)
    symbols = PARAMS.symbols
    chosen = data.draw(st.lists(st.sampled_from(range(len(symbols))), unique=True))
    ts = data.draw(st.lists(st.integers(5, 8), min_size=len(chosen), max_size=len(chosen)))
    ticks = {s: Tick(symbols[s], 1.0, t) for s, t in zip(chosen, ts, strict=True)}  # ties often
    tick_ts = np.full(len(symbols), K.NO_TS, dtype=np.int64)
    for s, t in ticks.items():
        tick_ts[s] = t.ts
    rank = np.empty(len(symbols), dtype=np.int64)
    rank[sorted(range(len(symbols)), key=symbols.__getitem__)] = np.arange(len(symbols))
    slots = np.arange(book.n_accounts, dtype=np.int64)
    got = K.newest_ticks(slots, book.acc_i, book.pos_i, book.bal, PARAMS.asset_price_sym,
                         tick_ts, rank)  # fmt: skip
    assert got.tolist() == [py_newest(book, a, ticks) for a in range(book.n_accounts)]


@pytest.mark.parametrize("seed", range(4))
def test_isolated_figures_and_account_times_match_the_python_reads(seed: int) -> None:
    book = random_book(seed, 200)
    slots = np.arange(book.n_accounts, dtype=np.int64)
    start, ints, floats, rises = K.isolated_units(slots, book.acc_i, book.pos_f, book.pos_i, 0.8)
    rows = [*ints.T.tolist()]
    figs = [*floats.T.tolist()]
    seen = 0
    for a in range(book.n_accounts):
        iso = [p for p in book.positions_of(a) if book.pos_i[P_MODE, p] != MODE_CROSS]
        lo, hi = int(start[a]), int(start[a + 1])
        assert [r[0] for r in rows[lo:hi]] == iso
        expected_rise = False
        for (p, s, raw, sub), (ratio, eq, mm, upnl) in zip(rows[lo:hi], figs[lo:hi], strict=True):
            e = float(book.pos_f[P_ISO_MARGIN, p]) + float(book.pos_f[P_UPNL, p])
            r = margin_ratio(float(book.pos_f[P_MM, p]), e, True)
            assert bits((ratio, eq, mm, upnl)) == bits(
                (r, e, float(book.pos_f[P_MM, p]), float(book.pos_f[P_UPNL, p]))
            )
            assert (s, raw, sub) == tuple(int(book.pos_i[c, p]) for c in (P_SYM, P_STATUS, P_SUB))
            expected_rise |= r >= 0.8
            seen += 1
        assert bool(rises[a]) == expected_rise
        ts = int(book.bal_ts[:, a].max(initial=-1))
        for p in book.positions_of(a):
            ts = max(ts, int(book.pos_ts[p]))
        assert K.account_ts(a, book.acc_i, book.pos_i, book.pos_ts, book.bal_ts) == ts
    assert seen > 10 and rises.any() and not rises.all()


levels = st.sampled_from(list(Status))
any_ratio = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, math.inf]),
)


@settings(max_examples=300, deadline=None)
@given(levels, any_ratio, st.sampled_from([0.0, 0.05, 0.1]))
def test_the_stepper_moves_as_the_transition_table(
    level: Status, ratio: float, band: float
) -> None:
    hyst = Hysteresis((0.8, 0.9, 1.0), band)
    assert stepper(hyst)(int(level), ratio) == int(advance(level, ratio, hyst))


edges = st.sampled_from(
    [0.0, 0.5, 0.75, 0.8 - 0.05, 0.8, 0.85, 0.9 - 0.05, 0.9, 0.95, 1.0 - 0.05, 1.0, 1.5,
     math.inf, math.nan]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(edges, levels, levels), min_size=1, max_size=40))
def test_levels_at_the_thresholds_and_band_edges_move_as_the_array_code(
    rows: list[tuple[float, Status, Status]],
) -> None:
    """Accounts built column by column with ratio exactly ``r`` (MM = r, equity 1)
    and no positions; each isolated unit likewise (its MM = r, margin 1)."""
    n = len(rows)
    ratio = np.array([r for r, _, _ in rows])
    acc_f = np.zeros((3, n))
    acc_f[A_MM], acc_f[A_WB] = ratio, 1.0
    acc_i = np.zeros((5, n), dtype=np.int64)
    acc_i[A_NCROSS] = 1
    acc_i[A_STATUS] = [int(b) for _, _, b in rows]
    acc_i[A_HEAD] = -1  # no positions
    lvl = np.array([int(p) for _, p, _ in rows], dtype=np.int8)
    act = np.zeros((2, n), dtype=np.uint8)
    cfg = AlertsConfig()
    hyst = Hysteresis((0.8, 0.9, 1.0), cfg.hysteresis)
    expected = advance_many(lvl.copy(), ratio, hyst)
    pos_f, pos_i = np.zeros((5, 1)), np.full((8, 1), -1, dtype=np.int32)
    _, new, _, need, band = K.cross_pass(
        np.arange(n, dtype=np.int64), lvl, act, acc_f, acc_i, pos_f, pos_i, np.zeros(1), 0, n,
        _rules(cfg),
    )  # fmt: skip
    assert new.tolist() == expected.tolist() == lvl.tolist()
    assert band.tolist() == (expected > acc_i[A_STATUS]).tolist()
    assert need.tolist() == np.flatnonzero(expected > 0).tolist()
    # the same ratios as isolated positions, one per account
    acc_i[A_HEAD] = np.arange(n)
    pos_f = np.zeros((5, n))
    pos_f[P_MM], pos_f[P_ISO_MARGIN] = ratio, 1.0
    pos_i = np.zeros((8, n), dtype=np.int32)
    pos_i[P_MODE], pos_i[P_NEXT] = MODE_ISOLATED, -1  # one isolated position per list
    _, _, floats, rises = K.isolated_units(np.arange(n, dtype=np.int64), acc_i, pos_f, pos_i,
                                           0.8)  # fmt: skip
    assert bits(floats[0].tolist()) == bits([margin_ratio(r, 1.0, True) for r in ratio.tolist()])
    assert rises.tolist() == [advance(Status.HEALTHY, r, hyst) > 0 for r in ratio.tolist()]
