"""``fishersym demo``: the main job on the embedded default (see README)."""
from __future__ import annotations

import argparse

from .families import DEFAULT_PARAMS, family_report
from ..families import available


def run(args: argparse.Namespace) -> int:
    print("fishersym demo: the exponential families of THEORY.md §4, derived live by SymPy\n")
    for n in available():
        print(family_report(n, DEFAULT_PARAMS.get(n, {}), seed=args.seed))
        print()
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the main job on the embedded default", description=__doc__)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
