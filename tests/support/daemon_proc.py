"""`monitor run` as a subprocess (its log in a file) and the small HTTP helpers the
subprocess tests poll it with."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Proc:
    """A `monitor run` subprocess with its log in a file."""

    def __init__(self, config: Path, log: Path, port: int) -> None:
        self.port = port
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 - closed in wait()
        self.p = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(config)],
            cwd=ROOT,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")},
        )

    def signal(self, sig: int) -> None:
        self.p.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.p.wait(timeout_s)
        finally:
            self._fh.close()

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        self._fh.close()


async def get(port: int, path: str) -> tuple[int, str]:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0, ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


def metric(text: str, name: str) -> float:
    """Sum of every sample of ``name`` (all label sets)."""
    total = 0.0
    for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M):
        total += float(m.group(1))
    return total


async def wait_until(pred: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await pred():  # type: ignore[operator]
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
