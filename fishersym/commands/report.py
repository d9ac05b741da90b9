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

from ..experiments.io import ExperimentError


def add_report_options(p: argparse.ArgumentParser, default_out: str = "out/report") -> None:
    p.add_argument("--out", default=default_out, metavar="DIR",
                   help=f"output folder (default: {default_out}); refused if it exists and is not empty, unless --force")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs of the small MLP (default: 10)")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default: 1e-2)")
    p.add_argument("--force", action="store_true", help="overwrite the files of an existing --out folder")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="MNIST from a local .npz / IDX file instead of the bundled 8x8 digits (see "
                        "'fishersym experiment mlp --help')")
    p.add_argument("--widths", type=int, nargs="+", default=[64, 32, 16], help="hidden widths (default: 64 32 16)")
    from ..experiments.mlp import ACTIVATIONS
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="sigmoid",
                   help="hidden activation (default: sigmoid)")
    p.add_argument("--n-samples", "-N", type=int, default=5000,
                   help="label samples N of the per-epoch Figure 2 analysis (default: 5000)")
    p.add_argument("--n-inputs", type=int, default=4, help="test inputs analysed per epoch (default: 4)")
    p.add_argument("--target", type=float, default=0.10,
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


def run(args: argparse.Namespace) -> int:
    from ..experiments.report import run_report
    started = time.time()
    try:
        r = run_report(args.out, settings_from(args), force=args.force)
    except (ExperimentError, ValueError) as exc:
        args._parser.exit(2, f"{args._parser.prog}: error: {exc}\n")
    print_summary(r, started)
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report (Fisher, V1, V2, bounds, "
                                      "recommendation, figures, derivation)", description=__doc__)
    add_report_options(p)
    p.set_defaults(func=run, _parser=p)
