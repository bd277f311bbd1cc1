"""Command line: ``monitor <command>``.

Each command lives in its own module under :mod:`monitor.cli.commands` and
exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Commands are discovered, so adding one never touches this file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from monitor import __version__
from monitor.errors import MonitorError

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"monitor {self.prog.split(' ', 1)[-1]}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _commands() -> list[ModuleType]:
    import monitor.cli.commands as pkg

    mods = [
        importlib.import_module(f"{pkg.__name__}.{info.name}")
        for info in pkgutil.iter_modules(pkg.__path__)
        if not info.name.startswith("_")
    ]
    return sorted(mods, key=lambda m: str(m.NAME))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="monitor", description="Real-time cross-margin liquidation monitor.")
    parser.add_argument("--version", action="version", version=f"monitor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for mod in _commands():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        run: Callable[[argparse.Namespace], int] = mod.run
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args))
    except MonitorError as exc:
        sys.stderr.write(f"monitor {args.command}: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
