"""The ``fishersym`` command line.

Every module in :mod:`fishersym.commands` that defines
``register(subparsers)`` contributes one subcommand; ``register`` adds its
parser and sets ``func`` (called with the parsed arguments, returns an exit
code).  ``fishersym --help`` lists them.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from . import commands

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fishersym",
        description="Diagonal Fisher information estimators: exact Fisher, variances V1/V2 and their bounds "
                    "(Soen & Sun, NeurIPS 2024).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(mod, "register"):
            mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
