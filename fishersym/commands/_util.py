"""Shared helpers of the CLI commands: argument types, user-code errors, error reporting, staged output.

Error policy of the ``fishersym`` CLI (see :func:`fishersym.cli.main`): bad input — the
package's documented errors (``ValueError``, ``TypeError``, :class:`~fishersym.experiments.io.ExperimentError`,
``OSError`` on input/output paths) and errors raised by the user's own code
(:class:`UserCodeError`) — ends in ``fishersym COMMAND: error: …`` and exit code 2, with the
traceback only under ``--debug``; any other exception inside the package is a bug and is
shown with its traceback.
"""
from __future__ import annotations

import argparse
import math
import sys
import traceback
from pathlib import Path
from typing import Any
from collections.abc import Callable

__all__ = ["UserCodeError", "positive_int", "nonneg_int", "positive_float", "nonneg_float", "dropout_rate",
           "print_error", "fail", "relocate"]


class UserCodeError(Exception):
    """An exception raised by the user's own code (their module, factory or model), re-raised with context.

    The message says whose code failed ("error while importing mypkg.models: RuntimeError: …");
    the original exception is ``__cause__`` (its traceback is printed under ``--debug``).
    """


def _number(kind: Callable, s: str, what: str):
    try:
        v = kind(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}")
    return v


def positive_int(s: str) -> int:
    """argparse type: an integer >= 1."""
    v = _number(int, s, "an integer >= 1")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {s!r}")
    return v


def nonneg_int(s: str) -> int:
    """argparse type: an integer >= 0."""
    v = _number(int, s, "an integer >= 0")
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {s!r}")
    return v


def positive_float(s: str) -> float:
    """argparse type: a finite number > 0."""
    v = _number(float, s, "a finite number > 0")
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {s!r}")
    return v


def nonneg_float(s: str) -> float:
    """argparse type: a finite number >= 0."""
    v = _number(float, s, "a finite number >= 0")
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {s!r}")
    return v


def dropout_rate(s: str) -> float:
    """argparse type: a probability in [0, 1)."""
    v = _number(float, s, "a number in [0, 1)")
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {s!r}")
    return v


def print_error(prog: str, exc: BaseException, debug: bool) -> None:
    """``prog: error: message`` on stderr; the traceback first under ``--debug``.

    For a :class:`UserCodeError` the traceback is the one of the user's exception (its cause).
    """
    if debug:
        shown = exc.__cause__ if isinstance(exc, UserCodeError) and exc.__cause__ is not None else exc
        traceback.print_exception(type(shown), shown, shown.__traceback__, file=sys.stderr)
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in msg:
        msg = f"{msg}: {exc.filename}"
    hint = "" if debug or not isinstance(exc, UserCodeError) else " (run with --debug for the traceback)"
    print(f"{prog}: error: {msg}{hint}", file=sys.stderr)


def fail(args: argparse.Namespace, exc: BaseException) -> int:
    """Report ``exc`` as a usage error of the subcommand and exit 2 (``SystemExit``)."""
    parser = args._parser
    print_error(parser.prog, exc, getattr(args, "debug", False))
    parser.exit(2)
    return 2  # pragma: no cover


def relocate(obj: Any, stage: Path, final: Path) -> Any:
    """The result of a run written into ``stage`` with every path inside it moved to ``final``."""
    if isinstance(obj, dict):
        return {k: relocate(v, stage, final) for k, v in obj.items()}
    if isinstance(obj, list):
        return [relocate(v, stage, final) for v in obj]
    if isinstance(obj, tuple):
        return tuple(relocate(v, stage, final) for v in obj)
    if isinstance(obj, Path):
        p = obj if obj.is_absolute() else Path.cwd() / obj
        if p == stage or stage in p.parents:
            return final / p.relative_to(stage)
    return obj


def family_params(items: list[str] | None) -> dict:
    """``--param KEY=VALUE`` options (repeatable) → the family's keyword arguments; a malformed item is a
    ValueError naming it (the parser is the pytest plugin's, whose UsageError is re-raised as such)."""
    from ..testing.pytest_plugin import parse_params
    try:
        return parse_params(items or [])
    except Exception as exc:  # pytest.UsageError: a malformed KEY=VALUE
        if type(exc).__name__ == "UsageError":
            raise ValueError(str(exc)) from None
        raise
