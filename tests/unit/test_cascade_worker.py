"""The market worker process: the same results as in process, and its failures."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from monitor.cascade import MarketConfig, MarketRisk, take_snapshot
from monitor.cascade.liqmap import liquidation_map
from monitor.cascade.worker import (
    CascadeSpec,
    MarketWorker,
    PartialSpec,
    RoundJob,
    Unnamed,
    WorkerError,
    compute,
    partial_moves,
)
from tests.unit.test_cascade_service import book, params

CFG = MarketConfig(shocks=("BTC=-10%", "BTC=-1%,ETH=-1%"), cascade_notional_threshold=1e9)


def full_job() -> RoundJob:
    return RoundJob(
        CFG.map_moves,
        PartialSpec(partial_moves(CFG), "i-1", (0, 3), 1234),
        CascadeSpec.of(CFG, CFG.scenarios(params())),
    )


@pytest.fixture
def worker() -> Iterator[MarketWorker]:
    w = MarketWorker()
    yield w
    w.close()


def test_the_worker_computes_what_the_process_would(worker: MarketWorker) -> None:
    snap = take_snapshot(book())
    job = full_job()
    here = compute(snap, job)
    there = worker.run(snap, job)
    assert worker.pid is not None and worker.pid != os.getpid()
    assert there.map is not None and here.map is not None
    assert np.array_equal(there.map.notional, here.map.notional)
    assert np.array_equal(there.map.accounts, here.map.accounts)
    # The map comes out of the partial's pass (its grid holds the map's moves):
    # the map on the configured moves, as computed alone.
    alone = liquidation_map(snap, CFG.map_moves)
    np.testing.assert_array_equal(here.map.moves, alone.moves)
    np.testing.assert_array_equal(here.map.accounts, alone.accounts)
    np.testing.assert_allclose(here.map.notional, alone.notional, rtol=1e-12)
    assert there.partial is not None and here.partial is not None
    assert (there.partial.instance, there.partial.partitions) == ("i-1", (0, 3))
    assert np.array_equal(there.partial.flow, here.partial.flow)
    assert np.array_equal(there.partial.gross, here.partial.gross)
    assert list(there.cascades) == ["BTC=-10%", "BTC=-1%,ETH=-1%"]
    for label, r in here.cascades.items():
        # Named on this side again: the accounts liquidated carry their ids.
        assert there.cascades[label].to_json(with_accounts=True) == r.to_json(with_accounts=True)
    rounds = there.cascades["BTC=-10%"].to_json(with_accounts=True)["rounds"]
    assert [a for r in rounds for a in r["accounts"]] == ["A", "B"]
    assert there.cpu_s >= 0.0
    # Recorded like the in-process cascades: the same gauges and alert.
    reg = CollectorRegistry()
    report = MarketRisk(params(), CFG, reg).record_cascades(there.cascades, snap.ts)
    assert [(a.shock, a.state, a.ts) for a in report.alerts] == [("BTC=-10%", "firing", 7)]
    assert reg.get_sample_value("monitor_cascade_rounds", {"shock": "BTC=-10%"}) == 2


def test_only_what_the_job_asks_for(worker: MarketWorker) -> None:
    out = worker.run(take_snapshot(book()), RoundJob(map_moves=(-0.1,)))
    assert out.map is not None and list(out.map.moves) == [-0.1]
    assert out.partial is None and out.cascades == {}


def test_account_ids_stay_behind() -> None:
    ids = Unnamed(3)
    assert len(ids) == 3
    with pytest.raises(LookupError, match="named on the daemon's side"):
        ids[0]


def test_an_error_in_a_job_is_reported_and_the_worker_carries_on(worker: MarketWorker) -> None:
    snap = take_snapshot(book())
    broken = dataclasses.replace(snap, qty=snap.qty[:1])  # arrays of different lengths
    with pytest.raises(WorkerError, match="failed in the worker") as err:
        worker.run(broken, full_job())
    assert "Traceback" in str(err.value)
    pid = worker.pid
    assert worker.run(snap, RoundJob(map_moves=(-0.1,))).map is not None
    assert worker.pid == pid and worker.started == 1


def test_a_dead_worker_is_replaced_on_the_next_job(worker: MarketWorker) -> None:
    snap = take_snapshot(book())
    worker.run(snap, RoundJob(map_moves=(-0.1,)))
    first = worker.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while worker.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not worker.alive
    out = worker.run(snap, RoundJob(map_moves=(-0.1,)))
    assert out.map is not None
    assert worker.started == 2 and worker.pid not in (None, first)


def test_a_worker_killed_during_a_job_fails_that_job(worker: MarketWorker) -> None:
    from monitor.bench.cascade import synthetic_book

    snap = take_snapshot(synthetic_book(100_000))  # a job of about a second
    worker.run(snap, RoundJob(map_moves=(-0.1,)))
    pid = worker.pid
    assert pid is not None
    timer = threading.Timer(0.3, os.kill, (pid, signal.SIGKILL))
    timer.start()
    try:
        with pytest.raises(WorkerError, match="died"):
            worker.run(snap, full_job())
    finally:
        timer.cancel()
    assert worker.pid is None  # the next job starts a new one


def test_close_stops_the_process(worker: MarketWorker) -> None:
    worker.run(take_snapshot(book()), RoundJob(map_moves=(-0.1,)))
    pid = worker.pid
    assert pid is not None
    worker.close()
    assert worker.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
