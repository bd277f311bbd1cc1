"""structlog set-up: JSON lines in production, the console renderer on a terminal.

Context bound with :func:`structlog.contextvars.bind_contextvars` (topic,
partition, offset of the batch in hand) is merged into every line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog


class _Stderr:
    """``sys.stderr`` looked up at every write: the process's stream can be replaced
    after logging is configured (a test runner capturing output does so per test),
    and a logger must never keep writing to a stream that was closed."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure_logging(
    level: str = "info", *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog (and route stdlib logging, e.g. aiokafka's, through it).

    ``json`` None: JSON when ``stream`` is not a terminal.
    """
    out: Any = stream if stream is not None and stream is not sys.stderr else _Stderr()
    as_json = not out.isatty() if json is None else json
    lvl = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if as_json:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    # Third-party libraries (aiokafka) log through the standard library: same
    # stream, same rendering (JSON lines stay JSON lines), warnings and up.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, logging.WARNING))


def get_logger(name: str) -> Any:
    """A lazy structlog logger with ``logger_name=name`` (configured on first use, so a
    module-level logger follows :func:`configure_logging` called later)."""
    return structlog.get_logger(logger_name=name)
