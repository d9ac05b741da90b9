"""``fishersym report``: a self-contained HTML report (plus Markdown and PNGs) on the embedded default.

Trains a small sigmoid MLP briefly on scikit-learn's 8×8 digits (or MNIST from
``--data``), and reports per layer the Fisher, V₁, V₂, the Theorem 4.1 bounds
and which estimator (Î₁ or Î₂) with how many label samples N reaches a 10 %
relative standard deviation; the paper's Figure 2 on this model; the family
constants; and the LaTeX derivation of a small network (THEORY.md §3–§11).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..experiments.io import ExperimentError, output_run
from ._util import fail, nonneg_int, positive_float, positive_int, relocate


def add_report_options(p: argparse.ArgumentParser, default_out: str = "out/report") -> None:
    p.add_argument("--out", default=default_out, metavar="DIR",
                   help=f"output folder (default: {default_out}); refused if it exists and is not empty, unless --force; "
                        "written in one piece at the end of the run")
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default: 0)")
    p.add_argument("--epochs", type=nonneg_int, default=10, help="training epochs of the small MLP (default: 10)")
    p.add_argument("--lr", type=positive_float, default=1e-2, help="Adam learning rate (default: 1e-2)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out folder written by fishersym (as a whole, at the end of the run)")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="MNIST from a local .npz / IDX file instead of the bundled 8x8 digits (see "
                        "'fishersym experiment mlp --help')")
    p.add_argument("--widths", type=positive_int, nargs="+", default=[64, 32, 16], help="hidden widths (default: 64 32 16)")
    from ..experiments.mlp import ACTIVATIONS
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="sigmoid",
                   help="hidden activation (default: sigmoid)")
    p.add_argument("--n-samples", "-N", type=positive_int, default=5000,
                   help="label samples N of the per-epoch Figure 2 analysis (default: 5000)")
    p.add_argument("--n-inputs", type=positive_int, default=4, help="test inputs analysed per epoch (default: 4)")
    p.add_argument("--target", type=positive_float, default=0.10,
                   help="target relative standard deviation of the recommendation (default: 0.10)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def settings_from(args: argparse.Namespace):
    from ..experiments.report import ReportSettings
    if not 0 < args.target < float("inf"):
        raise ExperimentError(f"--target must be a positive number, got {args.target}")
    return ReportSettings(seed=args.seed, epochs=args.epochs, lr=args.lr, widths=tuple(args.widths), activation=args.activation,
                          n_samples=args.n_samples, n_inputs=args.n_inputs, target_rel_sd=args.target,
                          data=args.data, progress=False if args.quiet else None)


def print_summary(r: dict, started: float) -> None:
    print()
    for row in r["rows"]:
        print(f"  {row['group']:8} {row['n_params']:6d} params   use {row['recommended']}: N = "
              f"{row['N_I1_one_input'] if row['recommended'] == 'I1' else row['N_I2_one_input']} per input "
              f"for 10% (Î₁: {row['N_I1_one_input']}, Î₂: {row['N_I2_one_input']})   [{row['reason']}]")
    out = r["out"].resolve()
    print(f"\nreport written in {time.time() - started:.1f} s to {out}/")
    print(f"  open {out / 'report.html'}  (self-contained; Markdown: {out / 'report.md'})")


def run_staged_report(args: argparse.Namespace, command: str, replace_own: bool = False, before=None) -> dict:
    """``run_report`` written through :func:`~fishersym.experiments.io.output_run` on ``--out``.

    ``before(run)`` is called once the folder checks have passed and before the report is run
    (the demo prints its family table there); errors exit 2 with ``error: …``.
    """
    from ..experiments.report import run_report
    try:
        settings = settings_from(args)
        with output_run(args.out, command, force=args.force, replace_own=replace_own) as run:
            if before is not None:
                before(run)
            r = run_report(run.stage, settings, force=True)
    except (ExperimentError, ValueError, TypeError, OSError) as exc:
        fail(args, exc)
    return relocate(r, run.stage, Path(args.out))


def run(args: argparse.Namespace) -> int:
    started = time.time()
    r = run_staged_report(args, "report")
    print_summary(r, started)
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report (Fisher, V1, V2, bounds, "
                                      "recommendation, figures, derivation)", description=__doc__)
    add_report_options(p)
    p.set_defaults(func=run, _parser=p)
