"""`python -m monitor`: the same entry point as the `monitor` console script."""

import sys

from monitor.cli import main

sys.exit(main())
