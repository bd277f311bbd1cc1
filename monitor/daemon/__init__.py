"""The Kafka daemon behind ``monitor run``: feeds, apply loop, checkpoints, health."""

from monitor.daemon.app import Daemon, run_daemon

__all__ = ["Daemon", "run_daemon"]
