"""``fishersym demo``: the main job on the embedded default — ``fishersym report`` into ./out/report.

First prints the family table (F, η, Σ, κ₄(u,u,u,u) derived by SymPy and the numeric Σ and
constants at a sample point, for every family), then runs the report:

Trains a small sigmoid MLP on scikit-learn's bundled 8×8 digits, and writes
one self-contained HTML report (plus Markdown and PNGs): per-layer Fisher,
V₁, V₂, bounds and the estimator recommendation, the paper's Figure 2 on this
model, the family constants and the LaTeX derivation of a small network.
Re-running replaces the demo's own previous output (a folder whose
``.fishersym-run`` marker says ``fishersym demo`` wrote it) in one step at the
end; the output of any other command, e.g. ``fishersym experiment mlp``, needs
``--force``, and a folder not written by fishersym is never replaced.
"""
from __future__ import annotations

import argparse
import time

from .report import add_report_options, print_summary, run_staged_report


def run(args: argparse.Namespace) -> int:
    """``fishersym demo``: the report on the embedded default, then the family summaries."""
    from ..families import available
    from .families import DEFAULT_PARAMS, family_report
    started = time.time()
    out = args.out

    def before(run) -> None:       # the folder checks passed: refusals come before any work
        if run.replacing == "demo":
            print(f"fishersym demo: replacing the previous demo output in {out}/ (at the end of the run)")
        elif run.replacing is not None:
            print(f"fishersym demo: --force: replacing the `fishersym {run.replacing}` output in {out}/ "
                  "(at the end of the run)")
        print("fishersym demo, part 1: the output families of THEORY §4, derived live by SymPy\n")
        for name in available():
            print(family_report(name, DEFAULT_PARAMS.get(name, {})))
            print()
        print(f"fishersym demo, part 2: report on the embedded default (digits, small {args.activation} MLP, "
              f"{args.epochs} epochs) -> {out}/")

    r = run_staged_report(args, "demo", replace_own=True, before=before)
    print_summary(r, started)
    return 0


def register(sub) -> None:
    """Add the ``demo`` sub-command to the sub-parsers ``sub``."""
    p = sub.add_parser("demo", help="run the main job (the report) on the embedded default into ./out/report",
                       description=__doc__)
    add_report_options(p)
    p.set_defaults(func=run, _parser=p)
