"""Logging: JSON lines for our logs and third-party (stdlib) logs alike."""

from __future__ import annotations

import io
import logging
import sys

import orjson
import pytest
import structlog

from monitor.logs import configure_logging, get_logger


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    yield None
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []


def test_our_lines_and_the_libraries_lines_are_both_json() -> None:
    buf = io.StringIO()
    configure_logging(json=True, stream=buf)
    get_logger("monitor.test").info("checkpoint", partition=3)
    logging.getLogger("aiokafka.consumer").warning("heartbeat failed for %s", "group-x")
    lines = [orjson.loads(line) for line in buf.getvalue().splitlines()]
    assert lines[0]["event"] == "checkpoint" and lines[0]["partition"] == 3
    assert lines[1]["event"] == "heartbeat failed for group-x"
    assert lines[1]["level"] == "warning" and lines[1]["logger"] == "aiokafka.consumer"


def test_logging_follows_a_replaced_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging(json=True)
    get_logger("monitor.test").info("one")
    first.close()  # e.g. a test runner's capture of a finished test
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    get_logger("monitor.test").info("two")
    assert orjson.loads(second.getvalue())["event"] == "two"
