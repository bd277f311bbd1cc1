"""Replay throughput (see :mod:`monitor.replay.bench`).

.venv/bin/python tests/bench/bench_replay.py [ACCOUNTS]
"""

from __future__ import annotations

import sys

from monitor.bench.report import render
from monitor.replay.bench import bench_replay


def main() -> None:
    accounts = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    print(f"replay bench, {accounts:,} accounts")
    print(render(bench_replay(accounts)))


if __name__ == "__main__":
    main()
