"""The peak memory figure the deploy resources are sized from (not a test).

    python -m tests.deploy.memory_peak [ACCOUNTS]     # default 1,000,000

Builds the synthetic book of ``monitor bench --suite book`` and samples the
process RSS every 5 ms while the two jobs that copy the book's arrays run at
once, as they can in the daemon: a checkpoint (``capture`` copies the live
columns, ``SnapshotStore.write`` encodes them into one file body) and, in a
thread, the liquidation map and the stack's standard cascades on a market
snapshot. Prints the steady RSS, the peak and the snapshot size.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import threading
import time

from monitor.bench.book import rss_mb
from monitor.bench.synthetic import build_book, generate
from monitor.cascade.config import MarketConfig
from monitor.cascade.service import MarketRisk
from monitor.cascade.snapshot import take_snapshot
from monitor.checkpoint.state import capture
from monitor.checkpoint.store import SnapshotStore

# The stack's five shocks, on underlyings of the synthetic instruments.
SHOCKS = ("BTC=-10%", "BTC=-20%", "ETH=-10%", "ETH=-20%", "ALT02=-20%")


def main(n_accounts: int) -> None:
    book = build_book(generate(n_accounts))
    gc.collect()
    market = MarketRisk(book.params, MarketConfig(shocks=SHOCKS))
    steady = rss_mb()
    peak = [steady]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    snap = take_snapshot(book)
    jobs = threading.Thread(target=lambda: (market.refresh_map(snap), market.run_cascades(snap)))
    jobs.start()
    state = capture(book, {}, created_ms=0)
    with tempfile.TemporaryDirectory() as d:
        size = SnapshotStore(d).write(state)
    jobs.join()
    done.set()
    sampler.join()
    print(
        f"accounts {n_accounts:,}, positions {book.n_positions:,}: steady RSS {steady:.0f} MB, "
        f"peak {peak[0]:.0f} MB (+{peak[0] - steady:.0f}), snapshot file {size / 2**20:.0f} MB"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
