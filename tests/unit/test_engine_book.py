"""Mechanics of the incremental book: the slot layout under churn, exact
re-derivation and the dirty list."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.book import MarginBook
from monitor.book.layout import (
    A_MM,
    A_NCROSS,
    A_NISO,
    A_STATUS,
    M_HWM,
    MODE_CROSS,
    P_ACCT,
    P_MODE,
    P_PREV,
    P_STATUS,
    P_SYM,
)
from monitor.events import BalanceEvent, Event, PositionEvent, Tick
from monitor.instruments import RiskParams, parse_instruments
from monitor.risk.levels import Status
from tests.conftest import SMALL

PARAMS = parse_instruments(SMALL, source="tests")


def test_a_level_the_exact_resync_changes_marks_its_account_dirty(
    small_params: RiskParams,
) -> None:
    book = MarginBook(small_params)
    book.apply(BalanceEvent("A", "USDT", 100.0, 1))
    book.apply(PositionEvent("A", "BTC-PERP", 1.0, 100.0, 1))
    book.apply(BalanceEvent("B", "USDT", 100.0, 1))
    book.apply(
        PositionEvent("B", "ETH-PERP", 1.0, 100.0, 1, margin_mode="isolated", isolated_margin=50.0)
    )
    book.apply(BalanceEvent("C", "USDT", 100.0, 1))
    book.apply(Tick("BTC-PERP", 101.0, 2))
    book.drain_dirty()
    # drift, as rounding might leave it: A's sum and B's isolated level are off
    book.acc_f[A_MM, 0] = 95.0
    book.acc_i[A_STATUS, 0] = Status.CRITICAL
    (iso,) = book.positions_of(1)
    book.pos_i[P_STATUS, iso] = Status.WARNING
    assert book.resync() > 90.0
    assert book.status.tolist() == [Status.HEALTHY] * 3
    assert book.pos_i[P_STATUS, iso] == Status.HEALTHY
    assert sorted(book.drain_dirty().tolist()) == [0, 1]  # not C: nothing changed there
    assert book.resync() < 1e-9
    assert book.drain_dirty().size == 0


def assert_layout(book: MarginBook) -> None:
    """Every group is one contiguous run of its own positions, every other used slot
    is free, and the doubly linked account lists hold exactly each account's."""
    ni = book.params.n_instruments
    hwm = int(book.meta[M_HWM])
    pi = book.pos_i
    owned = np.zeros(hwm, dtype=bool)
    for g in range(2 * ni):
        lo, n, cap = int(book.gstart[g]), int(book.glen[g]), int(book.gcap[g])
        assert 0 <= n <= cap and lo + cap <= hwm <= book.position_capacity
        assert not owned[lo : lo + cap].any(), "group segments overlap"
        owned[lo : lo + cap] = True
        run = slice(lo, lo + n)
        assert (pi[P_ACCT, run] >= 0).all()
        assert (pi[P_SYM, run] == g % ni).all() and (pi[P_MODE, run] == g // ni).all()
        assert (pi[P_ACCT, lo + n : lo + cap] == -1).all()
    assert (pi[P_ACCT, :hwm][~owned] == -1).all()
    assert book.n_positions == int(book.glen.sum()) == int((pi[P_ACCT, :hwm] >= 0).sum())
    seen = 0
    for a in range(book.n_accounts):
        slots = book.positions_of(a)
        prev = -1
        for p in slots:
            assert pi[P_ACCT, p] == a and pi[P_PREV, p] == prev
            prev = p
        syms = [int(pi[P_SYM, p]) for p in slots]
        assert len(set(syms)) == len(syms), "one position per instrument"
        n_cross = sum(int(pi[P_MODE, p]) == MODE_CROSS for p in slots)
        assert book.acc_i[A_NCROSS, a] == n_cross
        assert book.acc_i[A_NISO, a] == len(slots) - n_cross
        seen += len(slots)
    assert seen == book.n_positions


churn = st.lists(
    st.tuples(
        st.integers(0, 11),  # account
        st.sampled_from(["BTC-PERP", "ETH-PERP", "SOL-PERP"]),
        st.sampled_from([0.0, 0.0, 1.0, -2.0, 3.0]),  # closes are common
        st.sampled_from(["cross", "cross", "isolated"]),
        st.booleans(),  # a tick after it
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(churn, st.integers(1, 9))
def test_groups_stay_contiguous_and_lists_linked_under_any_churn(
    steps: list[tuple[int, str, float, str, bool]], batch: int
) -> None:
    book = MarginBook(PARAMS, accounts=1, positions=1)  # every growth path runs
    events: list[Event] = []
    for k, (a, sym, qty, mode, tick) in enumerate(steps):
        events.append(
            PositionEvent(f"A{a}", sym, qty, 100.0, k, margin_mode=mode, isolated_margin=50.0)  # type: ignore[arg-type]
        )
        if tick:
            events.append(Tick(sym, 100.0 + k % 7, k))
    for i in range(0, len(events), batch):
        assert book.apply_batch(events[i : i + batch]) == []
        assert_layout(book)
    book.compact()
    assert_layout(book)


def test_a_group_that_outgrows_its_room_moves_and_the_arrays_repack(
    small_params: RiskParams,
) -> None:
    book = MarginBook(small_params, accounts=1, positions=1000)
    hwm = int(book.meta[M_HWM])
    book.apply_batch([PositionEvent(f"A{k}", "BTC-PERP", 1.0, 100.0, 1) for k in range(40)])
    # moved to the end of the used slots, with a quarter more room than it needed
    assert (int(book.gstart[0]), int(book.glen[0]), int(book.gcap[0])) == (hwm, 40, 66)
    assert_layout(book)
    cap = book.position_capacity
    book.apply_batch([PositionEvent(f"B{k}", "ETH-PERP", 1.0, 10.0, 1) for k in range(5000)])
    assert book.position_capacity > cap and book.glen[1] == 5000  # repacked, larger
    assert_layout(book)
    book.apply(Tick("ETH-PERP", 11.0, 2))
    assert book.unrealized_pnl[40:].tolist() == [1.0] * 5000
    assert book.resync() < 1e-9


def test_segments_left_behind_by_moving_groups_are_reclaimed_by_a_repack(
    small_params: RiskParams,
) -> None:
    book = MarginBook(small_params, accounts=1, positions=1 << 16)
    repacks = 0
    for k in range(6000):  # BTC grows one position at a time: its run moves again and again
        before = book._dead
        book.apply(PositionEvent(f"A{k}", "BTC-PERP", 1.0, 100.0, 1))
        repacks += book._dead < before
        # at most the bound, plus the segment the last move left
        assert book._dead <= max(4096, book.n_positions // 2) + book.n_positions + 16
    assert repacks >= 1
    assert int(book.meta[M_HWM]) < 3 * 6000 + 4096  # dead segments never piled up
    assert_layout(book)


def test_a_batch_that_forces_a_repack_keeps_room_for_every_group_it_opens_in() -> None:
    """A repack lays every group out afresh; the groups of the batch that were not
    short before it still need their room (a crash, and before it positions
    written past their group, when they did not get it)."""
    import random

    from monitor.book.layout import M_HWM
    from monitor.instruments import load_instruments
    from tests.support.tansu import assert_same_book

    p = load_instruments()
    syms = list(p.symbols[: p.n_instruments])[:4]
    rnd = random.Random(0)
    book, plain = MarginBook(p), MarginBook(p)
    ts = 1
    for s in syms:
        book.apply(Tick(s, 100.0, ts))
        plain.apply(Tick(s, 100.0, ts))
    for _ in range(40):
        evs: list[Event] = []
        for _ in range(rnd.choice([1, 50, 500, 10_000])):
            ts += 1
            a, s, r = f"A{rnd.randrange(20_000)}", rnd.choice(syms), rnd.random()
            if r < 0.1:
                evs.append(BalanceEvent(a, "USDT", 1000.0, ts))
            elif r < 0.35:
                evs.append(PositionEvent(a, s, 0.0, 100.0, ts))
            else:
                mode = "isolated" if rnd.random() < 0.3 else "cross"
                evs.append(PositionEvent(a, s, rnd.uniform(-5, 5), 100.0, ts,
                                         margin_mode=mode, isolated_margin=10.0))  # fmt: skip
        if rnd.random() < 0.2:
            for ev in evs:
                assert book.apply(ev) is None
        else:
            assert book.apply_batch(evs, conflate=True) == []
        for ev in evs:
            assert plain.apply(ev) is None
        hwm = int(book.meta[M_HWM])
        for g in range(book.gstart.shape[0]):
            assert book.glen[g] <= book.gcap[g]
            assert book.glen[g] == 0 or book.gstart[g] + book.gcap[g] <= hwm
    assert_same_book(book, plain)


def test_closes_past_their_retention_are_forgotten_and_no_longer_reject_older_events() -> None:
    book = MarginBook(PARAMS)
    book.apply(Tick("BTC-PERP", 100.0, 1))
    for acc, t in (("A", 100), ("B", 300)):
        book.apply(BalanceEvent(acc, "USDT", 1000.0, 1))
        assert book.apply(PositionEvent(acc, "BTC-PERP", 1.0, 100.0, t - 50)) is None
        assert book.apply(PositionEvent(acc, "BTC-PERP", 0.0, 100.0, t)) is None  # the close
    assert book.remembered_closes == 2
    late = PositionEvent("A", "BTC-PERP", 2.0, 100.0, 90)  # older than A's close
    stale = book.apply(late)
    assert stale is not None and stale.reason.value == "stale"
    assert book.forget_closes_before(200) == 1  # A's close (100); B's (300) stays
    assert book.remembered_closes == 1
    assert book.apply(late) is None  # past the retention, an older event applies
    assert len(book.positions_of(book.slot_of("A") or 0)) == 1
    b_late = book.apply(PositionEvent("B", "BTC-PERP", 2.0, 100.0, 290))
    assert b_late is not None and b_late.reason.value == "stale"
    assert book.forget_closes_before(200) == 0
