"""The peak memory figure the deploy resources are sized from (not a test).

    python -m tests.deploy.memory_peak [ACCOUNTS]     # default 1,000,000

Builds the synthetic book of ``monitor bench --suite book`` and samples the
RSS of the process and of its market worker every 5 ms while the two jobs
that copy the book's arrays run at once, as they can in the daemon: a
checkpoint (``capture`` copies the live columns, ``SnapshotStore.write``
encodes them into one file body) and, in the market worker process, the
liquidation map, the partial market view and the stack's standard cascades on
a market snapshot. Prints the steady RSS, the peak of the two processes'
sum (what a container's memory limit counts), each one's own peak and the
snapshot size.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import threading
import time

from monitor.bench.book import process_rss_mb, rss_mb
from monitor.bench.synthetic import build_book, generate
from monitor.cascade.config import MarketConfig
from monitor.cascade.snapshot import take_snapshot
from monitor.cascade.worker import CascadeSpec, MarketWorker, PartialSpec, RoundJob, partial_moves
from monitor.checkpoint.state import capture
from monitor.checkpoint.store import SnapshotStore

# The stack's five shocks, on underlyings of the synthetic instruments.
SHOCKS = ("BTC=-10%", "BTC=-20%", "ETH=-10%", "ETH=-20%", "ALT02=-20%")


def main(n_accounts: int) -> None:
    book = build_book(generate(n_accounts))
    gc.collect()
    cfg = MarketConfig(shocks=SHOCKS)
    job = RoundJob(
        cfg.map_moves,
        PartialSpec(partial_moves(cfg), "peak", (0,), 0),
        CascadeSpec.of(cfg, cfg.scenarios(book.params)),
    )
    worker = MarketWorker()
    worker.run(take_snapshot(book), RoundJob(map_moves=(-0.1,)))  # started, as in the daemon
    gc.collect()
    steady = rss_mb() + process_rss_mb(worker.pid)
    peak = {"sum": steady, "daemon": rss_mb(), "worker": process_rss_mb(worker.pid)}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            own, theirs = rss_mb(), process_rss_mb(worker.pid)
            peak["sum"] = max(peak["sum"], own + theirs)
            peak["daemon"] = max(peak["daemon"], own)
            peak["worker"] = max(peak["worker"], theirs)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    snap = take_snapshot(book)
    jobs = threading.Thread(target=lambda: worker.run(snap, job))
    jobs.start()
    state = capture(book, {}, created_ms=0)
    with tempfile.TemporaryDirectory() as d:
        size = SnapshotStore(d).write(state)
    jobs.join()
    done.set()
    sampler.join()
    worker.close()
    print(
        f"accounts {n_accounts:,}, positions {book.n_positions:,}: steady RSS {steady:.0f} MB "
        f"(both processes), peak {peak['sum']:.0f} MB (+{peak['sum'] - steady:.0f}; "
        f"daemon {peak['daemon']:.0f}, market worker {peak['worker']:.0f}), "
        f"snapshot file {size / 2**20:.0f} MB"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
