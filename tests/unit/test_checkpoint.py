"""Snapshots: exact round trip of the book, atomic files, corruption detected."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from monitor.book import MarginBook
from monitor.checkpoint import SnapshotStore, capture, decode_snapshot, encode_snapshot, restore
from monitor.checkpoint.state import keep_accounts
from monitor.errors import StateError
from monitor.events import BalanceEvent, PositionEvent, Tick
from monitor.instruments import RiskParams
from tests.support.tansu import assert_same_book


def _book(params: RiskParams) -> MarginBook:
    b = MarginBook(params)
    evs = [
        Tick("BTC-PERP", 100.0, 1),
        Tick("BTC", 100.0, 1),
        BalanceEvent("A", "USDT", 1000.0, 2),
        BalanceEvent("A", "BTC", 1.5, 2),
        BalanceEvent("B", "USDT", 0.0, 3),
        PositionEvent("A", "BTC-PERP", 2.0, 95.0, 4, sub_account="desk-1"),
        PositionEvent("A", "ETH-PERP", -3.0, 50.0, 5, margin_mode="isolated", isolated_margin=40.0),
        PositionEvent("B", "SOL-PERP", 1.0, 10.0, 6),
        PositionEvent("B", "SOL-PERP", 0.0, 10.0, 7),  # closed: a tombstone
        PositionEvent("C", "BTC-PERP", -1.0, 120.0, 8, sub_account="desk-2"),
        Tick("BTC-PERP", 104.0, 9),
    ]
    for ev in evs:
        assert b.apply(ev) is None
    return b


def test_restore_gives_back_the_same_book(small_params: RiskParams) -> None:
    book = _book(small_params)
    state = capture(book, {("prices", 0): 12, ("account-events", 2): 7}, created_ms=5)
    again = restore(decode_snapshot(encode_snapshot(state)), small_params)
    assert_same_book(again, book)
    assert again.sub_labels == book.sub_labels
    assert again.last_event_ts == book.last_event_ts
    # Tombstones survive: re-opening the closed position with an older time is stale.
    assert again.apply(PositionEvent("B", "SOL-PERP", 1.0, 10.0, 6)) is not None
    assert book.apply(PositionEvent("B", "SOL-PERP", 1.0, 10.0, 6)) is not None
    # ... and the balances' times too.
    assert again.apply(BalanceEvent("B", "USDT", 5.0, 1)) is not None
    # Restored and original keep evolving identically.
    for b in (book, again):
        b.apply(Tick("BTC", 90.0, 10))
        b.apply(PositionEvent("C", "ETH-PERP", 4.0, 55.0, 11))
    assert_same_book(again, book)


def test_the_offsets_round_trip(small_params: RiskParams) -> None:
    offsets = {("prices", 0): 12, ("account-events", 2): 7}
    state = decode_snapshot(encode_snapshot(capture(_book(small_params), offsets, created_ms=42)))
    assert state.offsets == offsets
    assert state.created_ms == 42


def test_an_empty_book_round_trips(small_params: RiskParams) -> None:
    book = MarginBook(small_params)
    again = restore(decode_snapshot(encode_snapshot(capture(book))), small_params)
    assert again.n_accounts == 0 and again.n_positions == 0


@pytest.mark.parametrize("where", ["truncated", "flipped", "foreign"])
def test_corruption_is_detected(small_params: RiskParams, where: str) -> None:
    data = bytearray(encode_snapshot(capture(_book(small_params))))
    if where == "truncated":
        data = data[: len(data) // 2]
    elif where == "flipped":
        data[len(data) // 2] ^= 0x40
    else:
        data = bytearray(b"PK\x03\x04" + bytes(200))
    with pytest.raises(StateError):
        decode_snapshot(bytes(data))


def test_a_snapshot_of_other_instruments_is_refused(small_params: RiskParams) -> None:
    from monitor.instruments import load_instruments

    state = decode_snapshot(encode_snapshot(capture(_book(small_params))))
    with pytest.raises(StateError, match="other instruments"):
        restore(state, load_instruments())


def test_the_store_writes_atomically_and_sets_a_corrupt_file_aside(
    small_params: RiskParams, tmp_path: Path
) -> None:
    store = SnapshotStore(tmp_path / "state")
    assert store.read() is None
    store.write(capture(_book(small_params), {("p", 0): 3}))
    assert [p.name for p in store.dir.iterdir()] == ["book.snapshot"]  # no temp left behind
    assert store.read() is not None
    store.path.write_bytes(store.path.read_bytes()[:-10])
    loaded = store.load(now_ms=123)
    assert loaded.state is None and loaded.problem is not None
    assert loaded.set_aside == store.dir / "book.snapshot.123.corrupt"
    assert loaded.set_aside.exists() and not store.path.exists()


def test_a_crash_mid_write_leaves_the_old_snapshot(
    small_params: RiskParams, tmp_path: Path
) -> None:
    store = SnapshotStore(tmp_path)
    store.write(capture(_book(small_params), {("p", 0): 1}))
    # A temp file from a write that died before os.replace:
    (tmp_path / ".book.snapshot.dead.tmp").write_bytes(b"partial")
    state = store.read()
    assert state is not None and state.offsets == {("p", 0): 1}
    store.remove_temporaries()
    assert sorted(os.listdir(tmp_path)) == ["book.snapshot"]


def test_keeping_some_accounts_renumbers_every_reference(small_params: RiskParams) -> None:
    book = _book(small_params)
    part = np.array([0, 1, 2], dtype=np.int64)  # A, B, C
    state = capture(book, account_extras={"partition": part})
    kept = keep_accounts(state, np.array([False, True, True]))
    small = restore(kept, small_params)
    assert small.account_ids == ["B", "C"]
    assert kept.account_extras["partition"].tolist() == [1, 2]
    # B's tombstone moved with B; C's position is intact.
    assert small.apply(PositionEvent("B", "SOL-PERP", 1.0, 10.0, 6)) is not None
    c = small.slot_of("C")
    assert c is not None and len(small.positions_of(c)) == 1
