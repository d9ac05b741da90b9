"""``fishersym demo``: the main job on the embedded default — ``fishersym report`` into ./out/report.

First prints the family table (F, η, Σ, κ₄(u,u,u,u) derived by SymPy and the numeric Σ and
constants at a sample point, for every family), then runs the report:

Trains a small sigmoid MLP on scikit-learn's bundled 8×8 digits, and writes
one self-contained HTML report (plus Markdown and PNGs): per-layer Fisher,
V₁, V₂, bounds and the estimator recommendation, the paper's Figure 2 on this
model, the family constants and the LaTeX derivation of a small network.
Re-running replaces the demo's own previous output (a folder carrying the
``.fishersym-run`` marker); any other non-empty folder needs ``--force``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..experiments.io import MARKER, ExperimentError
from .report import add_report_options, print_summary, settings_from


def run(args: argparse.Namespace) -> int:
    from ..experiments.report import run_report
    from ..families import available
    from .families import DEFAULT_PARAMS, family_report
    started = time.time()
    out = Path(args.out)
    force = args.force
    if out.is_dir() and any(out.iterdir()) and not force:
        if not (out / MARKER).exists():  # refuse before any work
            args._parser.exit(2, f"{args._parser.prog}: error: {out}/ is not empty and is not a previous demo "
                                 "output; pass --force to overwrite it or choose another --out\n")
        print(f"fishersym demo: replacing the previous demo output in {out}/")
        force = True
    print("fishersym demo, part 1: the output families of THEORY.md §4, derived live by SymPy\n")
    for name in available():
        print(family_report(name, DEFAULT_PARAMS.get(name, {})))
        print()
    print(f"fishersym demo, part 2: report on the embedded default (digits, small {args.activation} MLP, "
          f"{args.epochs} epochs) -> {out}/")
    try:
        r = run_report(out, settings_from(args), force=force)
    except (ExperimentError, ValueError) as exc:
        args._parser.exit(2, f"{args._parser.prog}: error: {exc}\n")
    print_summary(r, started)
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the main job (the report) on the embedded default into ./out/report",
                       description=__doc__)
    add_report_options(p)
    p.set_defaults(func=run, _parser=p)
