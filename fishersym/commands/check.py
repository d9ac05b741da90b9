"""``fishersym check MODULE:FACTORY --family NAME``: the property suite on your own model.

Runs every applicable property of the paper (fishersym.testing.PROPERTIES) on
the model returned by the factory (an nn.Module, a (module, inputs) pair or a
dict with model/inputs/family), with hypothesis perturbing its parameters and
inputs, and prints the report: which properties held, failed (with a
counterexample) or do not apply, and V2/V1 per parameter group.  Exit code 0
when all applicable properties held, 1 when one failed, 2 on bad input.
"""
from __future__ import annotations

import argparse
import sys

from ..families import available


def run(args: argparse.Namespace) -> int:
    from ..testing.check import check_model
    from ..testing.pytest_plugin import parse_params
    shape = tuple(int(x) for x in args.input_shape) if args.input_shape else None
    try:
        params = parse_params(args.param)
        report = check_model(args.model, args.family, input_shape=shape, n_samples=args.n_samples,
                             max_examples=args.examples, family_params=params, seed=args.seed,
                             properties=args.properties.split(",") if args.properties else None)
    except Exception as exc:  # noqa: BLE001 - bad input is reported, not traced
        if type(exc).__name__ == "UsageError" or isinstance(exc, (ValueError, TypeError)):
            print(f"fishersym check: error: {exc}", file=sys.stderr)
            return 2
        raise
    print(report)
    return 0 if report.ok else 1


def register(sub) -> None:
    p = sub.add_parser("check", help="run the paper's property suite on your own model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODULE:FACTORY", help="e.g. mypkg.models:make_net (imported from the cwd too)")
    p.add_argument("--family", required=True, help=f"output family: {', '.join(available())}")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="family parameter (repeatable), e.g. --param C=10")
    p.add_argument("--input-shape", nargs="+", metavar="D", help="per-input shape if the factory gives no inputs")
    p.add_argument("--n-samples", type=int, default=1, help="label samples N (default 1)")
    p.add_argument("--examples", type=int, default=5, help="hypothesis examples per property (default 5)")
    p.add_argument("--properties", default=None, help="comma-separated subset of the properties")
    p.add_argument("--seed", type=int, default=0, help="seed of the default inputs")
    p.set_defaults(func=run)
