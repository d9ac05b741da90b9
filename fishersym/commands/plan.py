"""``fishersym plan``: which diagonal-Fisher estimator, with how many inputs M' and labels N per input,
per parameter group (THEORY §8, §9, §13; :func:`fishersym.estimators.planner.plan`).

Without --model: the report's small sigmoid MLP (``fishersym report``'s architecture and training
settings, trained briefly on the bundled 8×8 digits; no per-epoch analysis), planned on the digits'
test split with its labels, one group per layer.  With ``--model MODULE:FACTORY`` (``--model-arg``,
``--family``, ``--param`` as for ``fishersym report --model``): your model as given (a float64 copy in
eval mode), on ``--data FILE`` (.npz with x [, y]; .pt; MNIST IDX) or the digits fitted to its input
shape, one group per module with parameters.

Prints, per group, the recommendation first (the cheapest option meeting --target, or the smallest
relative s.e. within --budget backward passes), then each estimator's best option and a table of
cost against accuracy.  Every number is exact (computed from the exact moments of the data).

With ``--distributed`` under torchrun (``torchrun --nproc_per_node=2 -m fishersym plan --distributed``):
every rank builds the same model and data and analyses its shard of the data (THEORY §8); rank 0
prints the plan and writes --csv, the other ranks print and write nothing.
"""
from __future__ import annotations

import argparse
import time

from ..experiments.io import ExperimentError
from ._util import UserCodeError, fail, family_params, nonneg_int, positive_float, positive_int

DEFAULT_TARGET = 0.1


def _estimators(spec: str | None):
    if spec is None:
        return None
    from ..estimators.base import names
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise ValueError("--estimators is empty; give comma-separated names, e.g. --estimators squared_score,"
                         "exact_over_labels (or 'all')")
    if items == ["all"]:
        return names()
    return items


def _demo(args: argparse.Namespace):
    """The report's MLP trained on the digits; (float64 model, (x, y) test data, family, groups, what)."""
    import copy
    import torch
    from ..experiments.mlp import linear_groups
    from ..experiments.report import ReportSettings, demo_mlp
    from ..families import get as get_family
    s = ReportSettings(seed=args.seed, epochs=args.epochs, progress=False)
    model, ds = demo_mlp(s)
    m64 = copy.deepcopy(model).double().eval()
    x, y = torch.from_numpy(ds.x_test).double(), torch.from_numpy(ds.y_test)
    x, y = _subset(x, y, args.n_inputs, args.seed)
    fam = get_family("categorical", C=ds.n_classes)
    arch = f"{ds.n_features}-{'-'.join(map(str, s.widths))}-{ds.n_classes}"
    what = (f"the report's {s.activation} MLP {arch} trained {s.epochs} epochs on {ds.source} (seed {s.seed}); "
            f"{x.shape[0]} test inputs with their labels"
            + (f" (a seeded subset of {ds.x_test.shape[0]}: the plan targets the Fisher of this subset, and its "
               "'all' options have no input term only relative to it)" if x.shape[0] < ds.x_test.shape[0] else ""))
    return m64, (x, y), fam, linear_groups(m64), what


def _subset(x, y, n, seed):
    """A seeded subset of n inputs.  The plan then describes the Fisher *of these inputs*: its "every
    input once" options have no input term relative to them, not to the full data (said in the output)."""
    import torch
    if n is None or n >= x.shape[0]:
        return x, y
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return x[idx], (y[idx] if y is not None else None)


def _user(args: argparse.Namespace):
    """The user's model (--model) on --data; (float64 model, data, family, None, what)."""
    import copy
    import torch
    from ..experiments.data import adapt_inputs, load_model_data
    from ..experiments.report import _model_family
    from .check import load_factory, parse_model_args
    if args.epochs != 10:
        raise ValueError("--epochs applies to the embedded MLP, which --model replaces; drop it")
    model, _, fam_from = load_factory(args.model, parse_model_args(args.model_arg) or None)
    data = load_model_data(args.data, seed=args.seed)
    m64 = copy.deepcopy(model).double().eval()
    x, how = adapt_inputs(data.x, m64)
    y = torch.as_tensor(data.y) if data.y is not None else None
    x, y = _subset(x, y, args.n_inputs, args.seed)
    try:
        with torch.no_grad():
            out = m64(x[:1])
    except Exception as exc:  # the user's model raised
        raise UserCodeError(f"the model raised on inputs of shape {tuple(x[:1].shape)}: "
                            f"{type(exc).__name__}: {exc}") from exc
    if not (isinstance(out, torch.Tensor) and out.dim() == 2):
        raise ExperimentError(f"the model must map (batch, ...) inputs to (batch, C) outputs; on inputs of shape "
                              f"{tuple(x[:1].shape)} it returned "
                              f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    fam = _model_family(args.family or fam_from, family_params(args.param) or None, int(out.shape[1]))
    what = (f"{args.model} (float64 copy, eval mode) on {data.source} ({how}); {x.shape[0]} inputs"
            + (" with labels" if y is not None else " without labels")
            + (" (a seeded subset: the plan targets the Fisher of this subset, and its 'all' options have no input "
               "term only relative to it)" if args.n_inputs is not None and x.shape[0] == args.n_inputs
               and data.x.shape[0] > args.n_inputs else ""))
    return m64, ((x, y) if y is not None else x), fam, None, what


def run(args: argparse.Namespace) -> int:
    """``fishersym plan``: the estimator plan per layer group (under ``--distributed``, on every rank)."""
    from .report import distributed_run
    with distributed_run(args) as (rank, world):
        return _run(args, rank, world)


def _run(args: argparse.Namespace, rank: int, world: int) -> int:
    from ..estimators.planner import _one_thread, plan
    started, cpu0 = time.time(), time.process_time()
    dist_on = bool(getattr(args, "distributed", False))
    try:
        if args.budget is not None and args.target is not None:
            raise ValueError("give --target or --budget, not both")
        target = None if args.budget is not None else (args.target if args.target is not None else DEFAULT_TARGET)
        if not 0 < args.quantile <= 1:
            raise ValueError(f"--quantile must be in (0, 1], got {args.quantile}")
        ests = _estimators(args.estimators)
        if args.model is None:
            if args.model_arg or args.family or args.param:
                raise ValueError("--model-arg, --family and --param apply to --model; the embedded MLP is categorical")
            if args.data is not None:
                raise ValueError("--data applies to --model (the embedded MLP uses the bundled digits)")
            # the embedded MLP's tensors are tiny: one thread (thread start-up costs more than it saves)
            with _one_thread():
                model, data, fam, groups, what = _demo(args)
                p = plan(model, _shard(data, dist_on), fam, target=target, budget=args.budget, groups=groups,
                         estimators=ests, quantile=args.quantile, max_samples=args.max_samples,
                         max_inputs=args.max_inputs, batch_size=args.batch_size,
                         process_group=None if dist_on else False)
        else:
            model, data, fam, groups, what = _user(args)
            p = plan(model, _shard(data, dist_on), fam, target=target, budget=args.budget, groups=groups,
                     estimators=ests, quantile=args.quantile, max_samples=args.max_samples,
                     max_inputs=args.max_inputs, batch_size=args.batch_size,
                     process_group=None if dist_on else False)
        csv = p.to_csv(args.csv) if args.csv and rank == 0 else None
    except (ExperimentError, ValueError, TypeError, OSError, UserCodeError) as exc:
        fail(args, exc)
    if rank != 0:
        return 0
    if dist_on:
        what += f"; shared by {world} processes (torch.distributed), each analysing its shard"
    print(f"fishersym plan on {what}")
    print(p.to_text(ladder=not args.no_ladder))
    print(f"\nplanned in {time.time() - started:.1f} s ({time.process_time() - cpu0:.1f} s CPU)"
          + (f"; table written to {csv}" if csv else ""))
    return 0


def _shard(data, distributed: bool):
    """This rank's shard of the data under --distributed (contiguous rows; the plan is of all of them)."""
    if not distributed:
        return data
    from ..numeric.distributed import shard
    return shard(data)


def register(sub) -> None:
    """Add the ``plan`` sub-command to the sub-parsers ``sub``."""
    p = sub.add_parser("plan", help="which Fisher estimator, with how many inputs and labels, per layer "
                                    "(target relative s.e. or compute budget)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--target", type=positive_float, default=None,
                   help=f"target relative standard error per group (default: {DEFAULT_TARGET})")
    g.add_argument("--budget", type=positive_float, default=None,
                   help="compute budget in backward passes (then the smallest relative s.e. within it)")
    p.add_argument("--estimators", default=None, metavar="A,B,...",
                   help="comma-separated estimator names, or 'all' (default: all but param_hutchinson where its "
                        "P x P cost is large)")
    p.add_argument("--quantile", type=positive_float, default=0.5,
                   help="the fraction of a group's entries that must meet the target (default: 0.5, the median)")
    p.add_argument("--max-samples", type=positive_int, default=1024, help="largest N (labels per input; default 1024)")
    p.add_argument("--max-inputs", type=positive_int, default=None, help="largest M' (default: unbounded)")
    p.add_argument("--n-inputs", type=positive_int, default=None,
                   help="analyse this many inputs of the data (seeded subset; default: all)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="inputs per pass of the analysis (default 64)")
    p.add_argument("--csv", default=None, metavar="OUT", help="also write the full table as CSV")
    p.add_argument("--no-ladder", action="store_true", help="leave the cost-against-accuracy table out of the printout")
    p.add_argument("--seed", type=nonneg_int, default=0,
                   help="seed of the MLP training and the input subset (default 0)")
    p.add_argument("--epochs", type=nonneg_int, default=10, help="training epochs of the embedded MLP (default: 10)")
    m = p.add_argument_group("your own model (--model)")
    m.add_argument("--model", default=None, metavar="MODULE:FACTORY",
                   help="plan for this trained model instead of the embedded MLP (imported from the cwd too)")
    m.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of the factory (repeatable; Python literals)")
    m.add_argument("--data", default=None, metavar="PATH",
                   help="your inputs: .npz (arrays x [, y]), .pt (x, (x, y) or {'x', 'y'}) or MNIST IDX "
                        "(default: the digits fitted to the model's input shape)")
    m.add_argument("--family", default=None, help="output family (default: categorical with C = the model's outputs)")
    m.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="family parameter (repeatable); the size C is optional: taken from the model's outputs")
    from .report import add_distributed_option
    add_distributed_option(p)
    p.set_defaults(func=run, _parser=p)
