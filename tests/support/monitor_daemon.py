"""``monitor run`` as a subprocess, for tests that watch it from outside.

The daemon reads a config file plus ``MONITOR_*`` overrides (how a deployment
points a shipped config at its own brokers and ports); ``start`` waits until
``/readyz`` answers 200, ``stop`` sends SIGTERM (the daemon checkpoints) and
waits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.prometheus import http_get


class MonitorDaemon:
    def __init__(self, config: Path, env: dict[str, str], port: int, log: Path) -> None:
        self.config = config
        self.env = env
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"monitor run exited with {self.proc.returncode}:\n{self.tail()}"
                )
            with contextlib.suppress(OSError):
                if http_get(f"{self.url}/readyz", 1.0)[0] == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"monitor run not ready in {timeout_s} s:\n{self.tail()}")

    def metrics(self) -> str:
        status, body = http_get(f"{self.url}/metrics")
        assert status == 200, status
        return body

    def stop(self, timeout_s: float = 30.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        return proc.returncode

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
