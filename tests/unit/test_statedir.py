"""Per-partition state: cutting a book into partitions and putting it back together,
and the state directory's layout and overwrite rule."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from monitor.book import MarginBook
from monitor.book.layout import P_ACCT, P_SUB
from monitor.checkpoint import capture, decode_snapshot, encode_snapshot, restore
from monitor.checkpoint.codec import read_offsets
from monitor.checkpoint.state import concat_states, select_accounts, split_accounts
from monitor.checkpoint.statedir import StateDir
from monitor.errors import StateError
from monitor.events import BalanceEvent, PositionEvent, Tick
from monitor.instruments import RiskParams
from tests.support.tansu import assert_same_book


def _book(params: RiskParams, accounts: int = 12) -> MarginBook:
    b = MarginBook(params)
    b.apply(Tick("BTC-PERP", 100.0, 1))
    b.apply(Tick("ETH-PERP", 50.0, 1))
    b.apply(Tick("BTC", 100.0, 1))
    ts = 2
    for i in range(accounts):
        a = f"A{i}"
        assert b.apply(BalanceEvent(a, "USDT", 100.0 + i, ts)) is None
        if i % 2:
            assert b.apply(BalanceEvent(a, "BTC", 0.1 * i, ts)) is None
        sym = ("BTC-PERP", "ETH-PERP", "SOL-PERP")[i % 3]
        sub = f"desk-{i % 4}"
        assert b.apply(PositionEvent(a, sym, (-1.0) ** i * (1 + i), 90.0 + i, ts + 1,
                                     sub_account=sub)) is None  # fmt: skip
        if i % 5 == 0:  # a tombstone
            assert b.apply(PositionEvent(a, "BTC-PERP", 1.0, 99.0, ts + 2)) is None
            assert b.apply(PositionEvent(a, "BTC-PERP", 0.0, 99.0, ts + 3)) is None
        ts += 4
    b.apply(Tick("BTC-PERP", 97.0, ts))
    return b


def test_a_book_cut_by_partition_and_put_back_together_is_the_same_book(
    small_params: RiskParams,
) -> None:
    book = _book(small_params)
    part = np.array([i % 3 for i in range(book.n_accounts)], dtype=np.int64)
    state = capture(book, account_extras={"partition": part})
    pieces = split_accounts(state, part)
    assert sorted(pieces) == [0, 1, 2]
    assert sum(p.n_accounts for p in pieces.values()) == book.n_accounts
    for k, piece in pieces.items():
        assert set(piece.account_extras["partition"].tolist()) == {k}
        # each piece round-trips through the file format on its own
        restore(decode_snapshot(encode_snapshot(piece)), small_params)
    empty = select_accounts(state, [])
    whole = concat_states(empty, [pieces[2], pieces[0], pieces[1]])
    assert_same_book(restore(whole, small_params), book)
    # tombstones moved with their accounts: a stale re-open is still refused
    again = restore(whole, small_params)
    assert again.apply(PositionEvent("A0", "BTC-PERP", 1.0, 99.0, 3)) is not None
    assert again.apply(PositionEvent("A1", "BTC-PERP", 1.0, 99.0, 4)) is None  # no tombstone


def test_merged_sub_account_labels_keep_each_positions_label(small_params: RiskParams) -> None:
    a, b = MarginBook(small_params), MarginBook(small_params)
    a.apply(PositionEvent("X", "BTC-PERP", 1.0, 100.0, 1, sub_account="alpha"))
    b.apply(PositionEvent("Y", "BTC-PERP", 1.0, 100.0, 1, sub_account="beta"))
    b.apply(PositionEvent("Z", "ETH-PERP", 1.0, 100.0, 1, sub_account="alpha"))
    merged = restore(concat_states(capture(a), [capture(b)]), small_params)
    labels = {
        merged.account_ids[int(merged.pos_i[P_ACCT, p])]: merged.sub_labels[
            int(merged.pos_i[P_SUB, p])
        ]
        for p in merged.alive_positions().tolist()
    }
    assert labels == {"X": "alpha", "Y": "beta", "Z": "alpha"}


def test_an_account_held_by_two_partitions_is_an_error(small_params: RiskParams) -> None:
    a, b = MarginBook(small_params), MarginBook(small_params)
    a.apply(BalanceEvent("X", "USDT", 1.0, 1))
    b.apply(BalanceEvent("X", "USDT", 2.0, 2))
    with pytest.raises(StateError, match="two partitions"):
        concat_states(capture(a), [capture(b)])


def test_a_partition_snapshot_is_never_replaced_by_an_older_one(
    small_params: RiskParams, tmp_path: Path
) -> None:
    sd = StateDir(tmp_path, "i-1")
    sd.prepare()
    st = capture(_book(small_params, 3))
    newer = dataclasses.replace(st, offsets={("ev", 4): 100})
    older = dataclasses.replace(st, offsets={("ev", 4): 90})
    assert sd.write_partition("ev", 4, newer).size > 0
    skipped = sd.write_partition("ev", 4, older)
    assert skipped.size == 0 and skipped.skipped_for == 100
    assert read_offsets(sd.partition_store("ev", 4).path) == {("ev", 4): 100}
    assert sd.write_partition("ev", 4, dataclasses.replace(st, offsets={("ev", 4): 100})).size
    assert sd.partitions_on_disk("ev") == [4]
    loaded = sd.load_partition("ev", 4, now_ms=1)
    assert loaded.state is not None and loaded.state.offsets == {("ev", 4): 100}


def test_a_partition_snapshot_must_carry_exactly_its_own_offset(
    small_params: RiskParams, tmp_path: Path
) -> None:
    sd = StateDir(tmp_path, "i-1")
    st = capture(_book(small_params, 2))
    with pytest.raises(ValueError, match="exactly its offset"):
        sd.write_partition("ev", 1, dataclasses.replace(st, offsets={("ev", 2): 5}))
    # a file under the wrong name is refused on load
    store = sd.partition_store("ev", 1)
    store.write(dataclasses.replace(st, offsets={("ev", 2): 5}))
    with pytest.raises(StateError, match="not those of ev/1"):
        sd.load_partition("ev", 1, now_ms=1)


def test_the_union_of_a_directory_is_every_partition_with_the_instances_prices(
    small_params: RiskParams, tmp_path: Path
) -> None:
    book = _book(small_params)
    part = np.array([i % 2 for i in range(book.n_accounts)], dtype=np.int64)
    state = capture(book, account_extras={"partition": part})
    sd = StateDir(tmp_path, "i-1")
    for p, piece in split_accounts(state, part).items():
        sd.write_partition("ev", p, dataclasses.replace(piece, offsets={("ev", p): 10 + p},
                                                        account_extras={}))  # fmt: skip
    prices = dataclasses.replace(
        select_accounts(state, []), offsets={("px", 0): 7}, account_extras={}
    )
    sd.prices_store().write(prices)
    union = sd.read_union("ev")
    assert union.offsets == {("ev", 0): 10, ("ev", 1): 11, ("px", 0): 7}
    assert_same_book(restore(union, small_params), book)


@pytest.mark.parametrize("name", ["../x", "a/b", "", "."])
def test_names_that_cannot_be_file_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(StateError, match="cannot name a file"):
        StateDir(tmp_path, name)


def test_prepare_removes_temporaries_a_crash_left_behind(tmp_path: Path) -> None:
    sd = StateDir(tmp_path, "i-1")
    d = tmp_path / "partitions" / "ev"
    d.mkdir(parents=True)
    (d / ".3.snapshot.dead.tmp").write_bytes(b"partial")
    sd.prepare()
    assert list(d.iterdir()) == []
