"""Snapshot files in the state directory: atomic writes, verified loads.

A write goes to a temporary file in the same directory, is fsynced, renamed
over the snapshot with ``os.replace`` and the directory is fsynced, so a crash
at any point leaves either the old or the new snapshot, never a mix. A file
that fails verification is moved aside to ``<name>.<time>.corrupt`` (kept for
inspection) and reported; the caller then rebuilds.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from monitor.checkpoint.codec import decode_snapshot, encode_snapshot
from monitor.checkpoint.state import BookState
from monitor.errors import StateError

SNAPSHOT_NAME = "book.snapshot"


@dataclass(frozen=True, slots=True)
class Loaded:
    """The outcome of :meth:`SnapshotStore.load`: a state, or why there is none."""

    state: BookState | None
    problem: str | None = None  # set when a corrupt file was set aside
    set_aside: Path | None = None


class SnapshotStore:
    """The snapshot of one daemon, in ``directory``."""

    def __init__(self, directory: str | Path, name: str = SNAPSHOT_NAME) -> None:
        self.dir = Path(directory)
        self.path = self.dir / name

    def write(self, state: BookState) -> int:
        """Encode and write ``state`` atomically; returns the size in bytes."""
        return self.write_bytes(encode_snapshot(state))

    def write_bytes(self, data: bytes) -> int:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"{self.dir}: cannot create the state directory: {exc}") from exc
        tmp = self.dir / f".{self.path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            _fsync_dir(self.dir)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StateError(f"{self.path}: cannot write the snapshot: {exc}") from exc
        return len(data)

    def read(self) -> BookState | None:
        """The snapshot, None when there is none; :class:`StateError` when it is bad."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{self.path}: cannot read the snapshot: {exc}") from exc
        return decode_snapshot(data, str(self.path))

    def load(self, now_ms: int) -> Loaded:
        """Like :meth:`read`, but a corrupt snapshot is moved aside and reported."""
        try:
            return Loaded(self.read())
        except StateError as exc:
            aside = self.path.with_name(f"{self.path.name}.{now_ms}.corrupt")
            try:
                os.replace(self.path, aside)
            except OSError:
                aside = None  # type: ignore[assignment]
            return Loaded(None, str(exc), aside)

    def remove_temporaries(self) -> None:
        """Delete temp files a crash mid-write left behind."""
        for p in self.dir.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
