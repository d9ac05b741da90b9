"""``fishersym families``: the family table of THEORY §4, derived live by SymPy."""
from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping

import sympy as sp
import torch

from ..families import REGISTRY, available, get
from ..families.constants import family_constants
from ._util import nonneg_int

class _ExampleParams(Mapping):
    """name → the registered family's ``example_params`` (a live view of the registry, so a family
    registered after import appears too)."""

    def __getitem__(self, name: str) -> dict:
        return dict(REGISTRY[name].example_params)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(REGISTRY))

    def __len__(self) -> int:
        return len(REGISTRY)


#: the parameters each family is shown with: its ``example_params`` hook (``{}``: the constructor's defaults)
DEFAULT_PARAMS: Mapping[str, dict] = _ExampleParams()


def sample_point(fam, seed: int = 0) -> torch.Tensor:
    """A deterministic sample point h for the family, inside its domain (its ``sample_point`` hook)."""
    return fam.sample_point(seed)


#: longest κ₄ polynomial printed in full by default (the softmax's, C = 3, has 2,300+ characters)
KAPPA4_WIDTH = 200


def family_report(name: str, params: dict | None = None, seed: int = 0, full: bool = False) -> str:
    """The family's one-line summary, F, η, Σ and κ₄(u,u,u,u) derived by SymPy, and the numeric Σ and
    constants at a sample point.  ``params`` default to the family's ``example_params``.

    κ₄ longer than :data:`KAPPA4_WIDTH` characters is summarised (its definition and its number of
    terms) unless ``full``."""
    if params is None:
        params = DEFAULT_PARAMS[name] if name in REGISTRY else {}
    fam = get(name, **params)
    u = fam.direction_sym()
    lines = [f"== {name} {params or ''}".rstrip(), f"  {type(fam).summary()}",
             f"  F(h)          = {sp.sstr(fam.F_sym)}"]
    lines.append(f"  eta = dF      = {sp.sstr(list(fam.display(fam.eta_sym)))}")
    lines.append(f"  Sigma = d2F   = {sp.sstr(fam.display(fam.sigma_sym).tolist())}")
    k4 = fam.display(sp.expand(fam.contract4(fam.kappa4_sym, u)))
    text = sp.sstr(k4)
    if full or len(text) <= KAPPA4_WIDTH:
        lines.append(f"  kappa4(u,u,u,u) = {text}")
    else:
        n_terms = len(sp.Add.make_args(k4))
        lines.append(f"  kappa4(u,u,u,u) = E[((t - eta).u)^4] - 3 (u' Sigma u)^2: a polynomial of {n_terms} terms "
                     f"({len(text):,} characters; `fishersym families {name} --full` prints it)")
    h = sample_point(fam, seed)
    S = fam.sigma(h)
    lines.append(f"  at h = {[round(float(x), 4) for x in h]}: Sigma (numeric) = "
                 f"{[[round(float(x), 6) for x in row] for row in S]}")
    c = family_constants(fam, h.unsqueeze(0), optimised=True)
    pick = {k: float(v[0]) for k, v in c.as_dict().items() if k.endswith("_cert") or k.endswith("_opt")}
    lines.append("  constants: " + ", ".join(f"{k}={v:.6g}" for k, v in sorted(pick.items())))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``fishersym families``: the report of each named (default: every registered) family."""
    names = args.family or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        raise ValueError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
                         f"available: {', '.join(available())}")
    for n in names:
        print(family_report(n, seed=args.seed, full=args.full))
        print()
    return 0


def register(sub) -> None:
    """Add the ``families`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("families", help="print the family table (F, eta, Sigma, kappa4) derived by SymPy",
                       description=__doc__)
    p.add_argument("family", nargs="*", help="families to show (default: all)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the numeric sample point")
    p.add_argument("--full", action="store_true",
                   help=f"print every kappa4 polynomial in full (default: those over {KAPPA4_WIDTH} characters "
                        "are summarised)")
    p.set_defaults(func=run)
