"""Alerts as JSON lines to a file or to stdout (replay, debugging).

Each alert is one line of the wire form, written in the order received; the
same alerts always give the same bytes. A file is opened for appending.
``flush`` pushes the buffer to the OS and, with ``fsync``, to the disk.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from monitor.alerts.model import Alert, payloads
from monitor.sinks.base import DeliveryTimeoutError, SinkError


class FileSink:
    name = "file"
    durable = True

    def __init__(self, path: str | Path | None = None, *, fsync: bool = False) -> None:
        """``path`` None or ``"-"``: stdout."""
        self.path = None if path is None or str(path) == "-" else Path(path)
        self.fsync = fsync
        self._out: BinaryIO | None = None
        self.written = 0

    async def start(self) -> None:
        if self._out is not None:
            return
        if self.path is None:
            self._out = sys.stdout.buffer
            return
        try:
            self._out = self.path.open("ab")
        except OSError as exc:
            raise SinkError(f"cannot open the alerts file {self.path}: {exc.strerror}") from exc

    async def publish(self, alerts: Sequence[Alert | Any]) -> None:
        if not alerts:
            return
        if self._out is None:
            raise SinkError("file sink: publish before start (or after close)")
        self._out.write(b"".join(p + b"\n" for p in payloads(alerts)))
        self.written += len(alerts)

    async def flush(self, timeout_s: float) -> None:
        out = self._out
        if out is None:
            return
        out.flush()
        if self.fsync and self.path is not None:
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.to_thread(os.fsync, out.fileno())
            except TimeoutError as exc:
                raise DeliveryTimeoutError(
                    f"file sink: fsync of {self.path} took longer than {timeout_s} s"
                ) from exc

    async def close(self) -> None:
        out = self._out
        if out is None:
            return
        await self.flush(30.0)
        if self.path is not None:
            out.close()
        self._out = None
