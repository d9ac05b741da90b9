"""``fishersym experiment``: the paper's experiments (THEORY §11).

Subcommands:

* ``toy-ngd`` — Figure 1: natural gradient descent with Î₁ / Î₂ on a 2-D toy set
  (linear and logistic regression), test NLL, trajectories, summed variance;
* ``mlp``     — Figure 2: per-layer Fisher, V₁, V₂ and bounds while training an
  MLP on digit images (sklearn's 8×8 digits, or MNIST from a local file);
* ``table``   — Table 1: the family constants of THEORY §5, printed and as LaTeX;
* ``estimators`` — the diagonal Fisher estimators practitioners use (THEORY §13) on the report's
  MLP and a small CNN: predicted relative s.e. against cost, checked by Monte Carlo, and the EWC
  study's ordering explained by the variance split (THEORY §8).

Every experiment takes ``--out DIR``, ``--seed``, ``--epochs`` and ``--force``,
writes its numbers (CSV/JSON, with ``settings.json``) next to its PNG figures,
refuses to overwrite a non-empty ``--out`` without ``--force`` (and never replaces a
folder that fishersym did not write), and writes the whole run into a staging folder
that replaces ``--out`` in one step at the end: an interrupted or failed run leaves
``--out`` as it was (see :mod:`fishersym.experiments.io`).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..experiments.io import ExperimentError, output_run
from ._util import dropout_rate, fail, nonneg_int, positive_float, positive_int, relocate


def _common(p: argparse.ArgumentParser, name: str, epochs: int | None, epochs_help: str,
            min_epochs=positive_int) -> None:
    g = p.add_argument_group("common options")
    g.add_argument("--out", default=f"out/{name}", metavar="DIR",
                   help=f"output folder (default: out/{name}); refused if it exists and is not empty, "
                        "unless --force")
    g.add_argument("--seed", type=nonneg_int, default=0, help="random seed; runs are reproducible from it (default: 0)")
    g.add_argument("--epochs", type=min_epochs, default=epochs, help=epochs_help)
    g.add_argument("--force", action="store_true",
                   help="replace an existing --out folder written by fishersym (as a whole, at the end of the run)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def _done(out, paths: dict, started: float) -> None:
    print(f"\nwrote {len(paths)} files to {out}/ in {time.time() - started:.1f} s:")
    for k, v in paths.items():
        print(f"  {k:18} {v}")


def _staged(args, command: str, run_fn) -> dict:
    """Run ``run_fn(stage)`` inside :func:`output_run` on ``--out``; the result's paths point to ``--out``."""
    try:
        with output_run(args.out, command, force=args.force) as run:
            r = run_fn(run.stage)
    except (ExperimentError, ValueError, TypeError, OSError) as exc:
        fail(args, exc)
    return relocate(r, run.stage, Path(args.out))


# ---------------------------------------------------------------------- toy-ngd
def run_toy(args: argparse.Namespace) -> int:
    """``fishersym experiment toy-ngd``: Figure 1 (NGD with Î₁ and Î₂ on the toy regressions)."""
    from ..experiments.toy_ngd import ToySettings, run_toy_ngd
    started = time.time()
    s = ToySettings(seed=args.seed, epochs=args.epochs, n_seeds=args.seeds, n_train=args.n_train,
                    n_test=args.n_test, batch_size=args.batch_size, lr=args.lr, damping=args.damping,
                    theta0=tuple(args.theta0), models=tuple(args.models), check_every=args.check_every,
                    progress=False if args.quiet else None)
    r = _staged(args, "experiment toy-ngd", lambda stage: run_toy_ngd(stage, s, force=True))
    print("summed V1, V2 of the per-step estimate: median over epochs [range]; test NLL at the last epoch")
    for k, v in r["final"].items():
        print(f"{k:28} final test NLL {v['test_nll_mean']:.4f} ± {v['test_nll_sd']:.4f}   "
              f"V1 {v['var1_trace_median_over_epochs']:.4g} [{v['var1_trace_min_over_epochs']:.3g}, "
              f"{v['var1_trace_max_over_epochs']:.3g}]   V2 {v['var2_trace_median_over_epochs']:.4g} "
              f"[{v['var2_trace_min_over_epochs']:.3g}, {v['var2_trace_max_over_epochs']:.3g}]")
    _done(r["out"], r["paths"], started)
    return 0


# ---------------------------------------------------------------------- mlp
def run_mlp_cmd(args: argparse.Namespace) -> int:
    """``fishersym experiment mlp``: Figure 2 (the MLP's Fisher, variances and bounds per epoch)."""
    from ..experiments.mlp import MLPSettings, run_mlp
    started = time.time()
    s = MLPSettings(seed=args.seed, epochs=args.epochs, data=args.data, n_train=args.n_train, n_test=args.n_test,
                    widths=tuple(args.widths), activation=args.activation, dropout=args.dropout, lr=args.lr,
                    batch_size=args.batch_size, n_samples=args.n_samples, n_inputs=args.n_inputs,
                    optimised=args.optimised, progress=False if args.quiet else None)
    r = _staged(args, "experiment mlp", lambda stage: run_mlp(stage, s, force=True))
    print()
    print((r["out"] / "findings.md").read_text(encoding="utf-8"))
    _done(r["out"], r["paths"], started)
    return 0


# ---------------------------------------------------------------------- table
def run_table_cmd(args: argparse.Namespace) -> int:
    """``fishersym experiment table``: the table of the families' constants."""
    from ..experiments.table import TableSettings, run_table
    started = time.time()
    s = TableSettings(seed=args.seed, n_points=args.points, classes=tuple(args.classes),
                      sigma2=tuple(args.sigma2))
    r = _staged(args, "experiment table", lambda stage: run_table(stage, s, force=True, echo=True))
    print("\n" + r["latex"])
    _done(r["out"], r["paths"], started)
    return 0


# ---------------------------------------------------------------------- estimators
def run_estimators_cmd(args: argparse.Namespace) -> int:
    """``fishersym experiment estimators``: the estimator catalogue's predicted and Monte Carlo variances."""
    from ..experiments.estimators import EstimatorSettings, run_estimators
    started = time.time()
    s = EstimatorSettings(seed=args.seed, epochs=args.epochs, models=tuple(args.models), data=args.data,
                          n_train=args.n_train, n_analysis=args.n_analysis, m_ladder=tuple(args.m_ladder),
                          n_samples=tuple(args.n_samples), ewc_inputs=args.ewc_inputs,
                          ewc_population=args.ewc_population, n_mc_inputs=args.n_mc_inputs, repeats=args.repeats,
                          false_alarm=args.false_alarm, param_hutchinson_max_params=args.param_hutchinson_max_params,
                          neg_hessian_max_entries=args.neg_hessian_max_entries,
                          progress=False if args.quiet else None)
    try:
        s.validate()
    except ExperimentError as exc:
        fail(args, exc)
    r = _staged(args, "experiment estimators", lambda stage: run_estimators(stage, s, force=True))
    print()
    print(r["findings_md"])
    _done(r["out"], r["paths"], started)
    return 0


def _probability(s: str) -> float:
    v = positive_float(s)
    if not v < 0.5:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 0.5), got {s!r}")
    return v


def _classes(s: str) -> int:
    v = positive_int(s)
    if v < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2 classes (a categorical), got {s!r}")
    return v


def register(sub) -> None:
    """Add the ``experiment`` sub-command and its four experiments to the sub-parsers ``sub``."""
    p = sub.add_parser("experiment", help="run one of the experiments (toy-ngd, mlp, table, estimators)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    esub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    esub.required = True

    t = esub.add_parser("toy-ngd", help="Figure 1: NGD with Î₁ vs Î₂ on linear/logistic regression",
                        description="Figure 1 of the paper (THEORY §11): natural gradient descent with the "
                                    "diagonal Fisher estimated by Î₁ or Î₂ (one sampled label per input) on a 2-D "
                                    "toy set; Î₂ is exact for these linear models (THEORY §6.2).")
    _common(t, "toy-ngd", 256, "NGD epochs (default: 256, the paper's)")
    t.add_argument("--seeds", type=positive_int, default=5,
                   help="repetitions with different sampling seeds (default: 5)")
    t.add_argument("--n-train", type=positive_int, default=256, help="training points (default: 256)")
    t.add_argument("--n-test", type=positive_int, default=4096, help="test points (default: 4096)")
    t.add_argument("--batch-size", type=positive_int, default=4, help="inputs per NGD step (default: 4)")
    t.add_argument("--lr", type=positive_float, default=0.01, help="learning rate (default: 0.01)")
    t.add_argument("--damping", type=positive_float, default=1e-4,
                   help="added to the estimated Fisher before dividing; must be > 0 (default: 1e-4; not in the paper)")
    t.add_argument("--theta0", type=float, nargs=2, default=(-1.0, 0.0), metavar=("T1", "T2"),
                   help="common starting point (default: -1 0)")
    t.add_argument("--models", nargs="+", choices=("regression", "classification"),
                   default=["regression", "classification"], help="which models (default: both)")
    t.add_argument("--check-every", type=positive_int, default=64,
                   help="cross-check the closed-form variance with dataset_stats every K epochs (default: 64)")
    t.set_defaults(func=run_toy, _parser=t)

    m = esub.add_parser("mlp", help="Figure 2: per-layer Fisher, V₁, V₂ and bounds while training an MLP",
                        description="Figure 2 of the paper (THEORY §11): an MLP of four dense layers trained on "
                                    "digit images; after each epoch the exact per-layer Fisher, V₁, V₂ (N label "
                                    "samples) and the Theorem 4.1 bounds (paper-style and sharpened) at random test "
                                    "input(s). Writes mlp.csv (one row per epoch and layer), mlp_figure2.png, "
                                    "findings.md/json and settings.json.")
    _common(m, "mlp", 20, "training epochs (default: 20, the paper's)", nonneg_int)
    m.add_argument("--data", default=None, metavar="PATH",
                   help="MNIST from a local file: an .npz with arrays x (n,28,28)/(n,784) and y (n,), or IDX "
                        "files (train-images-idx3-ubyte[.gz] or the folder holding them). "
                        "Default: scikit-learn's bundled 8x8 digits")
    m.add_argument("--n-train", type=positive_int, default=None, help="use a seeded subset of the training set")
    m.add_argument("--n-test", type=positive_int, default=None, help="use a seeded subset of the test set")
    m.add_argument("--widths", type=positive_int, nargs="+", default=[128, 64, 32],
                   help="hidden widths (default: 128 64 32, i.e. 4 dense layers)")
    from ..activations import constructors
    m.add_argument("--activation", choices=sorted(constructors()), default="sigmoid",
                   help="hidden activation (default: sigmoid, the paper's)")
    m.add_argument("--dropout", type=dropout_rate, default=0.1, help="dropout after each hidden layer (default: 0.1)")
    m.add_argument("--lr", type=positive_float, default=3e-3, help="Adam learning rate (default: 3e-3)")
    m.add_argument("--batch-size", type=positive_int, default=32, help="training batch size (default: 32)")
    m.add_argument("--n-samples", "-N", type=positive_int, default=5000,
                   help="label samples N of the estimators; V₁, V₂ scale as 1/N (default: 5000, the paper's)")
    m.add_argument("--n-inputs", type=positive_int, default=1,
                   help="random test inputs analysed after each epoch, averaged (default: 1, the paper's)")
    m.add_argument("--optimised", action="store_true",
                   help="also the paper's bounds with multi-start optimised λ̃ (var1_*_opt; slow)")
    m.set_defaults(func=run_mlp_cmd, _parser=m)

    b = esub.add_parser("table", help="Table 1: the family constants of THEORY §5, printed and as LaTeX",
                        description="The family constants of Theorem 4.1 (THEORY §5, the paper's Table 1) for "
                                    "Gaussian and categorical outputs, symbolically and evaluated numerically at "
                                    "seeded random points; writes table.tex, table_standalone.tex, table.csv/json.")
    _common(b, "table", None, "accepted for a uniform interface; the table involves no training (no effect)",
            nonneg_int)
    b.add_argument("--points", type=positive_int, default=4, help="random softmax points per C (default: 4)")
    b.add_argument("--classes", type=_classes, nargs="+", default=[3, 10], help="numbers of classes C (default: 3 10)")
    b.add_argument("--sigma2", type=positive_float, nargs="+", default=[1.0, 0.5],
                   help="Gaussian variances for the numeric check (default: 1 0.5)")
    b.set_defaults(func=run_table_cmd, _parser=b)

    e = esub.add_parser("estimators", help="the Fisher estimators practitioners use: accuracy against cost, "
                                           "checked by Monte Carlo; the EWC ordering",
                        description="The diagonal Fisher estimators of fishersym.estimators (THEORY §13) on the "
                                    "report's MLP and LeNet-5 on digit images: the exact predicted relative s.e. of "
                                    "every estimator against cost in backward passes (M' inputs drawn i.i.d. and N "
                                    "labels or probes per input, or every analysed input once), checked against "
                                    "repeated Monte Carlo draws with a stated false-alarm probability, and whether the "
                                    "exact Fisher on a few hundred inputs beats one sampled label on every input "
                                    "(the EWC study's ordering), from the variance split of THEORY §8. Writes "
                                    "estimators_cost.csv, estimators_mc.csv, estimators_mc_entries.csv, "
                                    "estimators_ewc.csv, estimators_cost.png, estimators_cost_layers.png, "
                                    "estimators_mc.png, findings.md/json and settings.json.")
    _common(e, "estimators", 10, "training epochs of both models (default: 10, the report's)", nonneg_int)
    e.add_argument("--models", nargs="+", choices=("mlp", "cnn"), default=["mlp", "cnn"],
                   help="which models (default: both): the report's MLP (sigmoid, 64-32-16) and LeNet-5 adapted "
                        "to the image size")
    e.add_argument("--data", default=None, metavar="PATH",
                   help="MNIST from a local file (as for 'experiment mlp'); default: scikit-learn's 8x8 digits")
    e.add_argument("--n-train", type=positive_int, default=None, help="use a seeded subset of the training set")
    e.add_argument("--n-analysis", type=positive_int, default=256,
                   help="training inputs of the cost table; the population of the iid checks (default: 256)")
    e.add_argument("--m-ladder", type=positive_int, nargs="+",
                   default=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
                   help="numbers M' of inputs drawn i.i.d. in the cost table (default: 1 2 4 ... 4096)")
    e.add_argument("--n-samples", "-N", type=positive_int, nargs="+", default=[1, 4, 16],
                   help="labels (probes) per input in the cost table; must include 1 (default: 1 4 16)")
    e.add_argument("--ewc-inputs", type=positive_int, default=500,
                   help="M' of the exact Fisher in the EWC comparison (default: 500, the EWC study's)")
    e.add_argument("--ewc-population", type=positive_int, default=None,
                   help="training inputs that define the EWC target (default: the whole training set)")
    e.add_argument("--n-mc-inputs", type=positive_int, default=16,
                   help="inputs of each Monte Carlo check (default: 16)")
    e.add_argument("--repeats", "-R", type=positive_int, default=200,
                   help="Monte Carlo draws per check, at least 20 (default: 200)")
    e.add_argument("--false-alarm", type=_probability, default=1e-6,
                   help="false-alarm probability per Monte Carlo check (default: 1e-6)")
    e.add_argument("--param-hutchinson-max-params", type=positive_int, default=10000,
                   help="leave param_hutchinson out of models with more parameters: its variance needs the "
                        "P x P Fisher (default: 10000)")
    e.add_argument("--neg-hessian-max-entries", type=positive_int, default=32,
                   help="the neg_hessian check runs on the bias tensors with at most this many entries "
                        "(one Hessian-vector product per entry and draw; default: 32)")
    e.set_defaults(func=run_estimators_cmd, _parser=e)
