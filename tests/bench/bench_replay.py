"""Replay throughput: ``monitor bench --suite replay`` (see :mod:`monitor.bench.replay`).

.venv/bin/python tests/bench/bench_replay.py [ACCOUNTS]
"""

from __future__ import annotations

import sys

from monitor.cli import main

if __name__ == "__main__":
    accounts = sys.argv[1] if len(sys.argv) > 1 else "10000"
    sys.exit(main(["bench", "--suite", "replay", "--accounts", accounts]))
