"""The ``monitor bench --scale`` suite (see :mod:`monitor.bench.scale`).

.venv/bin/python tests/bench/bench_scale.py [--messages N] [--accounts N] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import sys

from monitor.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "--scale", *sys.argv[1:]]))
