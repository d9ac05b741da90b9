"""Links between a network's raw output o and the natural parameters h.

THEORY.md §1: a link may sit between the raw output o and h; the analysis
always uses the composite map θ ↦ h, so the link's own curvature enters
∂²h/∂θ_i².  A link is defined twice, once in SymPy (``sym``) and once in torch
(``__call__``); the tests check the two against each other.

Elementwise links (h_c = g(o_c)) can be folded into the fast MLP recursion of
THEORY §7 as one more activation; they expose ``g1``/``g2`` (g' and g'').
A link that mixes outputs (``MeanLogVar``) is handled by the generic engine.
"""
from __future__ import annotations

from typing import Sequence

import sympy as sp
import torch

__all__ = ["Link", "Identity", "Scale", "MeanLogVar", "get_link", "LINKS"]


class Link:
    """Map raw network outputs o ∈ ℝ^{out_dim} to natural parameters h ∈ ℝ^C."""

    name: str = "link"
    elementwise: bool = True

    def __call__(self, o: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sym(self, o: Sequence[sp.Expr]) -> list[sp.Expr]:  # pragma: no cover - abstract
        raise NotImplementedError

    def g1(self, o: torch.Tensor) -> torch.Tensor:
        """Elementwise first derivative g'(o) (elementwise links only)."""
        raise TypeError(f"link {self.name!r} is not elementwise")

    def g2(self, o: torch.Tensor) -> torch.Tensor:
        """Elementwise second derivative g''(o) (elementwise links only)."""
        raise TypeError(f"link {self.name!r} is not elementwise")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Identity(Link):
    """h = o (the default)."""

    name = "identity"

    def __call__(self, o: torch.Tensor) -> torch.Tensor:
        return o

    def sym(self, o: Sequence[sp.Expr]) -> list[sp.Expr]:
        return list(o)

    def g1(self, o: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(o)

    def g2(self, o: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(o)


class Scale(Link):
    """h = c·o, e.g. c = 1/σ² for a Gaussian network that outputs its mean μ."""

    name = "scale"

    def __init__(self, c: float, c_sym: sp.Expr | None = None):
        if not (isinstance(c, (int, float)) and c > 0):
            raise ValueError(f"Scale link needs a positive float, got {c!r}")
        self.c = float(c)
        self.c_sym = sp.nsimplify(c) if c_sym is None else c_sym

    def __call__(self, o: torch.Tensor) -> torch.Tensor:
        return self.c * o

    def sym(self, o: Sequence[sp.Expr]) -> list[sp.Expr]:
        return [self.c_sym * oi for oi in o]

    def g1(self, o: torch.Tensor) -> torch.Tensor:
        return torch.full_like(o, self.c)

    def g2(self, o: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(o)

    def __repr__(self) -> str:
        return f"Scale({self.c!r})"


class MeanLogVar(Link):
    """Gaussian with learned variance: o = (μ, s = log σ²) ↦ h = (μ e^{−s}, −e^{−s}/2).

    THEORY §4 (last row of the table): h = (μ/σ², −1/(2σ²)).  The map mixes
    the two outputs, so it is not elementwise.
    """

    name = "meanlogvar"
    elementwise = False

    def __call__(self, o: torch.Tensor) -> torch.Tensor:
        mu, s = o[..., 0], o[..., 1]
        prec = torch.exp(-s)
        return torch.stack([mu * prec, -0.5 * prec], dim=-1)

    def sym(self, o: Sequence[sp.Expr]) -> list[sp.Expr]:
        mu, s = o
        return [mu * sp.exp(-s), -sp.exp(-s) / 2]


LINKS = {"identity": Identity, "scale": Scale, "meanlogvar": MeanLogVar}


def get_link(link: str | Link | None, default: Link) -> Link:
    """Resolve a link given by name or instance (None → the family's default)."""
    if link is None:
        return default
    if isinstance(link, Link):
        return link
    if isinstance(link, str) and link in ("identity",):
        return Identity()
    if isinstance(link, str) and link == "meanlogvar":
        return MeanLogVar()
    raise ValueError(
        f"unknown link {link!r}; available: 'identity', 'meanlogvar', or a Link instance "
        "(e.g. fishersym.families.links.Scale(c))"
    )
