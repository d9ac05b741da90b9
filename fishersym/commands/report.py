"""``fishersym report``: a self-contained HTML report (plus Markdown and PNGs) on the embedded default or your model.

Without --model: trains a small sigmoid MLP briefly on scikit-learn's 8×8 digits
(or MNIST from ``--data``), and reports per layer the Fisher, V₁, V₂, the
Theorem 4.1 bounds and which estimator (Î₁ or Î₂) with how many label samples N
reaches a 10 % relative standard deviation; the paper's Figure 2 on this model;
the family constants; and the LaTeX derivation of a small network (THEORY §3–§11).

With ``--model MODULE:FACTORY``: the same per-tensor analysis on your own trained
model as given (no training), on inputs from ``--data FILE`` (.npz with arrays x
[, y]; .pt holding x, (x, y) or {'x', 'y'}; MNIST IDX), or on the digits fitted to
the model's input shape when that can be inferred: per parameter tensor I, V₁, V₂,
the bounds, the recommendation, which tensors have V₂ ≡ 0 and why, and a figure.

With ``--distributed`` under torchrun (``torchrun --nproc_per_node=2 -m fishersym report --distributed``):
every rank builds the same model and data, the data-set passes (the per-layer table and the
planner) are shared (each rank analyses its shard; THEORY §8), rank 0 writes the outputs and prints,
the other ranks write nothing to --out (they work in a temporary folder that is removed).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import shutil
import tempfile
import time
from pathlib import Path

from ..experiments.io import ExperimentError, output_run
from ._util import UserCodeError, fail, family_params, nonneg_int, positive_float, positive_int, relocate


def add_report_options(p: argparse.ArgumentParser, default_out: str = "out/report") -> None:
    """Add the options shared by ``report`` and ``demo`` (output folder, seed, training, data) to ``p``."""
    p.add_argument("--out", default=default_out, metavar="DIR",
                   help=f"output folder (default: {default_out}); refused if it exists and is not empty, unless "
                        "--force; written in one piece at the end of the run")
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default: 0)")
    p.add_argument("--epochs", type=nonneg_int, default=10, help="training epochs of the small MLP (default: 10)")
    p.add_argument("--lr", type=positive_float, default=1e-2, help="Adam learning rate (default: 1e-2)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out folder written by fishersym (as a whole, at the end of the run)")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="MNIST from a local .npz / IDX file instead of the bundled 8x8 digits (see "
                        "'fishersym experiment mlp --help'); with --model: your inputs, an .npz (arrays x [, y]), "
                        "a .pt (x, (x, y) or {'x', 'y'}) or MNIST IDX")
    p.add_argument("--widths", type=positive_int, nargs="+", default=[64, 32, 16],
                   help="hidden widths (default: 64 32 16)")
    from ..activations import constructors
    p.add_argument("--activation", choices=sorted(constructors()), default="sigmoid",
                   help="hidden activation (default: sigmoid)")
    p.add_argument("--n-samples", "-N", type=positive_int, default=5000,
                   help="label samples N of the per-epoch Figure 2 analysis (default: 5000)")
    p.add_argument("--n-inputs", type=positive_int, default=4,
                   help="test inputs analysed per epoch; with --model: inputs drawn from the data (default: 4)")
    p.add_argument("--target", type=positive_float, default=0.10,
                   help="target relative standard deviation of the recommendation (default: 0.10)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def settings_from(args: argparse.Namespace):
    """The :class:`~fishersym.experiments.report.ReportSettings` of the parsed options (``--target`` checked)."""
    from ..experiments.report import ReportSettings
    if not 0 < args.target < float("inf"):
        raise ExperimentError(f"--target must be a positive number, got {args.target}")
    return ReportSettings(seed=args.seed, epochs=args.epochs, lr=args.lr, widths=tuple(args.widths),
                          activation=args.activation, n_samples=args.n_samples, n_inputs=args.n_inputs,
                          target_rel_sd=args.target, data=args.data, progress=False if args.quiet else None)


def print_summary(r: dict, started: float) -> None:
    """Print the report's recommendation per group and where it was written."""
    print()
    for row in r["rows"]:
        print(f"  {row['group']:8} {row['n_params']:6d} params   use {row['recommended']}: N = "
              f"{row['N_I1_one_input'] if row['recommended'] == 'I1' else row['N_I2_one_input']} per input "
              f"for 10% (Î₁: {row['N_I1_one_input']}, Î₂: {row['N_I2_one_input']})   [{row['reason']}]")
    out = r["out"].resolve()
    print(f"\nreport written in {time.time() - started:.1f} s to {out}/")
    print(f"  open {out / 'report.html'}  (self-contained; Markdown: {out / 'report.md'})")


def run_staged_report(args: argparse.Namespace, command: str, replace_own: bool = False, before=None,
                      distributed: bool = False) -> dict:
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
            r = run_report(run.stage, settings, force=True, distributed=distributed)
    except (ExperimentError, ValueError, TypeError, OSError) as exc:
        fail(args, exc)
    return relocate(r, run.stage, Path(args.out))


#: options of the embedded MLP's training, refused together with --model (they would be ignored)
MLP_ONLY = {"epochs": 10, "lr": 1e-2, "widths": [64, 32, 16], "activation": "sigmoid", "n_samples": 5000}


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Add the ``--model`` options (a user's model, its data and family) to ``p``."""
    g = p.add_argument_group("your own model (--model)")
    g.add_argument("--model", default=None, metavar="MODULE:FACTORY",
                   help="report on this trained model instead of the embedded MLP, e.g. "
                        "fishersym.experiments.architectures:lenet5 (imported from the cwd too)")
    g.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of the factory (repeatable; Python literals), e.g. --model-arg input_size=8")
    g.add_argument("--family", default=None,
                   help="output family (default: categorical with C = the model's output size)")
    g.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="family parameter (repeatable); the size C is optional: taken from the model's outputs")
    g.add_argument("--path", default="auto",
                   help="exact path: auto (default), fast, generic, reverse (see fishersym.numeric.conditional_stats)")
    g.add_argument("--v2", default="exact", choices=["exact", "sample"],
                   help="V2 where it is not proved zero on the reverse path: exact (default) or exact on a random "
                        "sample of entries per tensor, with a confidence interval (--v2-sample)")
    g.add_argument("--v2-sample", type=positive_float, default=None, metavar="K",
                   help="with --v2 sample: entries per tensor (>= 1) or a fraction (< 1)")
    g.add_argument("--batch-size", type=positive_int, default=1,
                   help="inputs per engine call (default: 1; the progress bar counts inputs)")


def model_settings_from(args: argparse.Namespace):
    """:class:`ModelReportSettings` from the command line; MLP-only options refused with --model."""
    from ..experiments.report import ModelReportSettings
    from .check import parse_model_args
    given = [k for k, v in MLP_ONLY.items() if getattr(args, k) != v]
    if given:
        raise ValueError(f"{', '.join('--' + k.replace('_', '-') for k in given)} applies to the embedded MLP, "
                         "which --model replaces; drop it")
    if not 0 < args.target < float("inf"):
        raise ExperimentError(f"--target must be a positive number, got {args.target}")
    params = family_params(args.param)
    v2s = args.v2_sample
    if v2s is not None:
        if args.v2 != "sample":
            raise ValueError("--v2-sample applies to --v2 sample; add --v2 sample or drop it")
        v2s = int(v2s) if v2s >= 1 and float(v2s).is_integer() else v2s
    return ModelReportSettings(model=args.model, model_args=parse_model_args(args.model_arg) or None, data=args.data,
                               family=args.family, family_params=params or None, n_inputs=args.n_inputs,
                               path=args.path, v2=args.v2, v2_sample=v2s, batch_size=args.batch_size, seed=args.seed,
                               target_rel_sd=args.target, progress=False if args.quiet else None)


def run_model(args: argparse.Namespace, quiet: bool = False) -> int:
    """``fishersym report --model``: load the factory, run :func:`run_model_report` staged on --out."""
    from ..experiments.report import run_model_report
    from .check import load_factory
    started = time.time()
    try:
        s = model_settings_from(args)
        model, _, fam_from = load_factory(args.model, s.model_args)
        s.family = s.family or fam_from
        r = run_model_report(model, args.out, s, force=args.force, distributed=getattr(args, "distributed", False))
    except (ExperimentError, ValueError, TypeError, OSError, UserCodeError) as exc:
        fail(args, exc)
    if quiet:
        return 0
    print()
    sm = r["summary"]
    print(f"  {sm['model']}: {sm['n_params']:,} parameters in {len(r['rows'])} tensors, {sm['n_inputs']} inputs "
          f"{tuple(sm['input_shape'])} ({sm['data']['adaptation']}), path {sm['path']}")
    w = max(len(row["group"]) for row in r["rows"])
    for row in r["rows"]:
        n = row["N_I1_one_input"] if row["recommended"] == "I1" else row["N_I2_one_input"]
        print(f"  {row['group']:{w}} {row['n_params']:9,d}  use {row['recommended']}: N = {n} per input  "
              f"V2: {row['var2']}")
    out = Path(args.out).resolve()
    print(f"\nreport written in {time.time() - started:.1f} s to {out}/")
    print(f"  open {out / 'report.html'}  (self-contained; Markdown: {out / 'report.md'})")
    return 0


@contextlib.contextmanager
def distributed_run(args: argparse.Namespace):
    """``--distributed``: initialise torch.distributed from torchrun's environment (gloo on CPU, NCCL on
    CUDA; :func:`fishersym.numeric.distributed.init_from_env`), yield (rank, world size), and tear the
    group down at the end.  Without --distributed: (0, 1), nothing initialised.  Without torchrun's
    environment: exit 2 with how to launch."""
    if not getattr(args, "distributed", False):
        yield 0, 1
        return
    import torch.distributed as dist
    from ..numeric.distributed import init_from_env
    try:
        rank, world = init_from_env()
    except RuntimeError as exc:
        fail(args, exc)
    try:
        yield rank, world
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def rank_args(args: argparse.Namespace, rank: int):
    """The arguments this rank runs with: rank 0 the given ones; another rank writes into a temporary
    folder (removed at the end) instead of --out, without progress bars."""
    if rank == 0:
        yield args
        return
    tmp = tempfile.mkdtemp(prefix=f"fishersym-rank{rank}-")
    a = copy.copy(args)
    a.out, a.force, a.quiet = str(Path(tmp) / "out"), True, True
    try:
        yield a
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    """``fishersym report``: the HTML report on the embedded MLP or on ``--model``."""
    with distributed_run(args) as (rank, world):
        with rank_args(args, rank) as a:
            if getattr(a, "model", None):
                return run_model(a, quiet=rank != 0)
            started = time.time()
            r = run_staged_report(a, "report", distributed=world > 1 or getattr(args, "distributed", False))
            if rank == 0:
                print_summary(r, started)
    return 0


def register(sub) -> None:
    """Add the ``report`` sub-command to the sub-parsers ``sub``."""
    p = sub.add_parser("report", help="write a self-contained HTML report (Fisher, V1, V2, bounds, "
                                      "recommendation, figures, derivation)", description=__doc__)
    add_report_options(p)
    add_model_options(p)
    add_distributed_option(p)
    p.set_defaults(func=run, _parser=p)


def add_distributed_option(p: argparse.ArgumentParser) -> None:
    """Add ``--distributed`` (share the data-set passes between torchrun processes) to ``p``."""
    p.add_argument("--distributed", action="store_true",
                   help="under torchrun (e.g. torchrun --nproc_per_node=2 -m fishersym ... --distributed): share the "
                        "data-set passes between the processes (gloo on CPU, NCCL on CUDA); rank 0 writes the "
                        "output, the others nothing")
