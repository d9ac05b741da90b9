"""fishersym: the theory of diagonal Fisher information estimators, exact where it can be.

Subpackages follow the mathematics: :mod:`fishersym.families` (output distributions),
:mod:`fishersym.symbolic` (SymPy derivations), :mod:`fishersym.numeric` (exact I, V₁, V₂ and bounds
on real models), :mod:`fishersym.bounds`, :mod:`fishersym.estimators` (the estimators practitioners
use, their exact variances, the planner and error bars for peer libraries), :mod:`fishersym.testing`
and :mod:`fishersym.experiments`.  The most used entry points are importable from here:
``fishersym.plan`` and ``fishersym.error_bars`` (loaded on first use, so ``import fishersym`` stays
light).
"""
from __future__ import annotations

import importlib
from importlib import metadata as _metadata
from typing import Any

__all__ = ["plan", "error_bars", "__version__"]

try:        # the installed distribution's version (pyproject.toml), recorded in every settings.json
    __version__ = _metadata.version("fishersym")
except _metadata.PackageNotFoundError:      # run from a source tree that was never installed
    __version__ = "0+unknown"

_LAZY = {"plan": ("fishersym.estimators.planner", "plan"),
         "error_bars": ("fishersym.estimators.peers", "error_bars")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'fishersym' has no attribute {name!r}")
