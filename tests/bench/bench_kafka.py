"""The ``monitor bench --kafka`` suite (see :mod:`monitor.bench.kafka`).

.venv/bin/python tests/bench/bench_kafka.py [--messages N] [--accounts N] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import sys

from monitor.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "--kafka", *sys.argv[1:]]))
