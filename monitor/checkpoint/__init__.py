"""Checkpoints: the book and the consumed offsets, written together atomically.

- :mod:`.state`: capture a :class:`~monitor.book.MarginBook` as plain arrays
  (alive positions only), restore it, keep only some accounts.
- :mod:`.codec`: the framed, checksummed file format.
- :mod:`.store`: atomic write (temp file, fsync, ``os.replace``, fsync of the
  directory) and load, setting a corrupt file aside.
"""

from monitor.checkpoint.codec import FORMAT_VERSION, decode_snapshot, encode_snapshot
from monitor.checkpoint.state import BookState, capture, closed_positions, restore
from monitor.checkpoint.store import SnapshotStore

__all__ = [
    "FORMAT_VERSION",
    "BookState",
    "SnapshotStore",
    "capture",
    "closed_positions",
    "decode_snapshot",
    "encode_snapshot",
    "restore",
]
