"""The ``fishersym`` command line.

Every module in :mod:`fishersym.commands` that defines
``register(subparsers)`` contributes one subcommand; ``register`` adds its
parser and sets ``func`` (called with the parsed arguments, returns an exit
code).  ``fishersym --help`` lists them.

Errors (issue 13 item 15): bad input ends in ``fishersym COMMAND: error: …`` and exit
code 2 — argparse's usage errors, the package's documented errors (``ValueError``,
``TypeError``, :class:`~fishersym.experiments.io.ExperimentError`, ``OSError`` on the
paths given) and exceptions raised by the user's own code (their module on import, their
factory, their model's forward; reported as theirs, e.g. ``error while importing
mypkg.models: RuntimeError: …``).  ``--debug`` (before or after the command) also prints
the traceback.  Any other exception raised inside fishersym is a bug and is shown with
its traceback.  Ctrl-C ends with exit code 130 and leaves every output folder as it was.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from . import commands
from .commands._util import UserCodeError, print_error
from .experiments.io import ExperimentError

__all__ = ["main", "build_parser", "DOCUMENTED_ERRORS"]

#: exceptions that mean bad input (exit code 2 with a message), not a bug in fishersym
DOCUMENTED_ERRORS = (UserCodeError, ExperimentError, ValueError, TypeError, OSError)


def _add_debug(parser: argparse.ArgumentParser, top: bool) -> None:
    """``--debug`` on the parser and, recursively, on every subcommand (so it may follow the command)."""
    parser.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="show the Python traceback of an error")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                _add_debug(sub, False)


def build_parser() -> argparse.ArgumentParser:
    """The ``fishersym`` argument parser, with one sub-command per module of :mod:`fishersym.commands`."""
    parser = argparse.ArgumentParser(
        prog="fishersym",
        description="Diagonal Fisher information estimators: exact Fisher, variances V1/V2 and their bounds "
                    "(Soen & Sun, NeurIPS 2024).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(mod, "register"):
            mod.register(sub)
    _add_debug(parser, True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status, a documented error
    printed as one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"{parser.prog} {args.command}"
    try:
        return int(args.func(args) or 0)
    except DOCUMENTED_ERRORS as exc:
        print_error(prog, exc, args.debug)
        return 2
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; output folders are left as they were before this run", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
