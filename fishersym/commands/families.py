"""``fishersym families``: the family table of THEORY.md §4, derived live by SymPy."""
from __future__ import annotations

import argparse

import sympy as sp
import torch

from ..families import available, get
from ..families.constants import family_constants
from ._util import nonneg_int

DEFAULT_PARAMS = {"gaussian": {"C": 1}, "bernoulli": {}, "categorical": {"C": 3}, "poisson": {"C": 1},
                  "gaussian_meanvar": {}}


def sample_point(fam, seed: int = 0) -> torch.Tensor:
    """A deterministic sample point h for the family (inside its domain)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(fam.C, generator=g, dtype=torch.float64)
    if fam.name == "gaussian_meanvar":
        h[1] = -0.5 - h[1].abs()
    return h


#: longest κ₄ polynomial printed in full by default (the softmax's, C = 3, has 2,300+ characters)
KAPPA4_WIDTH = 200


def family_report(name: str, params: dict, seed: int = 0, full: bool = False) -> str:
    """F, η, Σ and κ₄(u,u,u,u) derived by SymPy, and the numeric Σ and constants at a sample point.

    κ₄ longer than :data:`KAPPA4_WIDTH` characters is summarised (its definition and its number of
    terms) unless ``full``."""
    fam = get(name, **params)
    u = fam.direction_sym()
    lines = [f"== {name} {params or ''}".rstrip(), f"  F(h)          = {sp.sstr(fam.F_sym)}"]
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
    c = family_constants(fam, h.unsqueeze(0), optimise=True)
    pick = {k: float(v[0]) for k, v in c.as_dict().items() if k.endswith("_cert") or k.endswith("_opt")}
    lines.append("  constants: " + ", ".join(f"{k}={v:.6g}" for k, v in sorted(pick.items())))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    names = args.family or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        raise ValueError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
                         f"available: {', '.join(available())}")
    for n in names:
        print(family_report(n, DEFAULT_PARAMS.get(n, {}), seed=args.seed, full=args.full))
        print()
    return 0


def register(sub) -> None:
    p = sub.add_parser("families", help="print the family table (F, eta, Sigma, kappa4) derived by SymPy",
                       description=__doc__)
    p.add_argument("family", nargs="*", help=f"families to show (default: all)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the numeric sample point")
    p.add_argument("--full", action="store_true",
                   help=f"print every kappa4 polynomial in full (default: those over {KAPPA4_WIDTH} characters "
                        "are summarised)")
    p.set_defaults(func=run)
