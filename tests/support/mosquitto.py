"""A real Mosquitto broker for tests: started on a free loopback port with a
temporary config, persistence in a temp directory (so it can be stopped and
started again with its sessions), stopped at the end.

Use the ``mosquitto`` fixture (import it into a test module or conftest:
``from tests.support.mosquitto import mosquitto``), or :class:`Mosquitto`
directly. :func:`make_certs` writes a CA, a server certificate for
127.0.0.1 and a client certificate (openssl), for a broker that requires
TLS with client certificates (``Mosquitto(dir, tls=certs)``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MOSQUITTO = os.environ.get("MOSQUITTO") or shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certs(workdir: Path) -> Certs:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client one."""
    workdir.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=workdir, check=True, capture_output=True)

    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=monitor-test-ca")  # fmt: skip
    (workdir / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "monitor")):
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        ext = ("-extfile", "server.ext") if name == "server" else ()
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", *ext)  # fmt: skip
    # Mosquitto started as root drops to its own user: let it read them (test keys).
    for path in [workdir, *workdir.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    d = workdir
    return Certs(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt",
                 d / "client.key")  # fmt: skip


class Mosquitto:
    """One broker process; ``stop()`` and ``start()`` again keep port and state.
    With ``tls`` it speaks TLS only and requires a client certificate."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path, port: int | None = None, tls: Certs | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        tls_lines = (
            ""
            if tls is None
            else f"cafile {tls.ca}\ncertfile {tls.server_cert}\nkeyfile {tls.server_key}\n"
            "require_certificate true\n"
        )
        # Started as root, mosquitto drops to its own user, which cannot reach the
        # test's private directories: its log and persistence (the sessions a
        # restart must keep) would silently fail. Stay root there.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"{user}listener {self.port} {self.host}\n"
            f"{tls_lines}"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir / 'data'}/\n"
            "autosave_interval 1\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            "max_queued_messages 100000\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited on start: {err}{self.log_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.2),
            ):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} in {timeout_s} s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (the broker saves its sessions), then wait."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        if proc.stderr is not None:
            proc.stderr.close()
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running broker on a free port, stopped after the test."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mqtt_certs() -> Iterator[Certs]:
    """TLS material in a directory the broker's own user can reach (the pytest
    temporary directories are private to root)."""
    workdir = Path(tempfile.mkdtemp(prefix="monitor-certs-"))
    workdir.chmod(0o755)
    try:
        yield make_certs(workdir / "certs")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
