"""structlog set-up: JSON lines in production, the console renderer on a terminal.

Context bound with :func:`structlog.contextvars.bind_contextvars` (topic,
partition, offset of the batch in hand) is merged into every line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog


def configure_logging(
    level: str = "info", *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog (and route stdlib logging, e.g. aiokafka's, through it).

    ``json`` None: JSON when ``stream`` is not a terminal.
    """
    out = stream if stream is not None else sys.stderr
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
    # Third-party libraries log through the standard library: same stream, warnings up.
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, logging.WARNING))


def get_logger(name: str) -> Any:
    """A lazy structlog logger with ``logger_name=name`` (configured on first use, so a
    module-level logger follows :func:`configure_logging` called later)."""
    return structlog.get_logger(logger_name=name)
