"""The ``monitor bench --alert-latency`` suite (see :mod:`monitor.bench.alert_latency`).

.venv/bin/python tests/bench/bench_alert_latency.py [--accounts N] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import sys

from monitor.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "--alert-latency", *sys.argv[1:]]))
