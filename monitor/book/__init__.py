"""The incremental, columnar margin state store."""

from monitor.book.layout import MODE_CROSS, MODE_ISOLATED
from monitor.book.store import MarginBook

__all__ = ["MODE_CROSS", "MODE_ISOLATED", "MarginBook"]
