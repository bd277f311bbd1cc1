"""Mechanics of the incremental book: exact re-derivation and the dirty list."""

from __future__ import annotations

from monitor.book import MarginBook
from monitor.book.layout import A_MM, A_STATUS, P_STATUS
from monitor.events import BalanceEvent, PositionEvent, Tick
from monitor.instruments import RiskParams
from monitor.risk.levels import Status


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
