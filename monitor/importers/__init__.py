"""Converters from real market recordings to wire-format tick files.

One module per recording format; :data:`FORMATS` maps the ``--format`` names
of ``monitor import`` to them, and :mod:`monitor.importers.run` drives one.
"""

from monitor.importers import binance_csv, binance_ws, candles
from monitor.importers.common import Importer

FORMATS: dict[str, Importer] = {
    "binance-ws": binance_ws.read,
    "binance-csv": binance_csv.read,
    "candles": candles.read,
}

__all__ = ["FORMATS"]
