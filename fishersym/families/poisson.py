"""Poisson output with log link, one independent Poisson per output; THEORY.md §4 row 4.

h = log λ, t(y) = y ∈ ℕ^C, F(h) = Σ_c e^{h_c}, Σ = diag(λ); all cumulants of
a Poisson equal λ, so κ₄(u,u,u,u) = Σ_c λ_c u_c⁴ and

    N·V₁ = Σ_c λ_c u_c⁴ + 2(Σ_c λ_c u_c²)²      ((λ + 2λ²)u⁴ for C = 1),
    N·V₂ = Σ_c λ_c w_c².

Constants (derived here, checked by the tests): with x_c = v_c² on the simplex,
λ̃_max(M) = λ_max + 2λ_max² and λ̃_max(K) = λ_max + 3λ_max² (attained on the
axis of the largest rate); λ̃_min(M) ≥ λ_min/C + 2λ_min², λ̃_min(K) ≥ λ_min/C + 3λ_min².
"""
from __future__ import annotations

import math
from typing import Sequence

import sympy as sp
import torch

from .base import ExponentialFamily, Support, batch_shape
from .links import Link, get_link

__all__ = ["Poisson"]


class Poisson(ExponentialFamily):
    name = "poisson"
    discrete = True

    def __init__(self, C: int = 1, link: str | Link | None = None):
        if not isinstance(C, int) or C < 1:
            raise ValueError(f"poisson: C must be a positive integer, got {C!r}")
        super().__init__(C, get_link(link, None) if link is not None else None)

    def log_partition_sym(self, h: Sequence[sp.Expr]) -> sp.Expr:
        return sp.Add(*[sp.exp(hi) for hi in h])

    def mean_params_sym(self) -> dict[sp.Expr, sp.Expr]:
        if self.C == 1:
            return {self.h_sym[0]: sp.log(sp.Symbol("lambda", positive=True))}
        return {ha: sp.log(sp.Symbol(f"lambda_{a + 1}", positive=True)) for a, ha in enumerate(self.h_sym)}

    # numeric closed forms
    def log_partition(self, h: torch.Tensor) -> torch.Tensor:
        return torch.exp(h).sum(-1)

    def mean(self, h: torch.Tensor) -> torch.Tensor:
        return torch.exp(h)

    def sigma(self, h: torch.Tensor) -> torch.Tensor:
        return torch.diag_embed(torch.exp(h))

    def _lam(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        lam = torch.exp(h)
        return lam.unsqueeze(-2) if u.dim() == h.dim() + 1 else lam

    def sigma_quad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return (self._lam(h, u) * u * u).sum(-1).expand(batch_shape(h, u))

    def kappa4(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return (self._lam(h, u) * u ** 4).sum(-1).expand(batch_shape(h, u))

    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.check_h(h)
        lam = torch.exp(h).expand(n, *h.shape).contiguous()
        return torch.poisson(lam, generator=generator)

    def log_base_measure(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.lgamma(t + 1).sum(-1)

    def support(self, h: torch.Tensor, tail: float = 1e-15) -> Support:
        """Joint grid {0..y_max}^C; y_max is chosen from a Chernoff bound so that
        the mass outside is at most ``tail`` for every input."""
        lam_max = float(torch.exp(h).max())
        # Chernoff: P(Y ≥ k) ≤ e^{-λ}(eλ/k)^k for k > λ; per coordinate tail/C.
        k = max(1, math.ceil(lam_max) + 1)
        while -lam_max + k * (1 + math.log(lam_max) - math.log(k)) > math.log(tail / self.C):
            k += 1
        if k ** self.C > 2_000_000:
            raise ValueError(f"poisson support grid of {k}^{self.C} points is too large to enumerate; "
                             "use fewer outputs or smaller rates")
        grid = torch.arange(k, dtype=h.dtype, device=h.device)
        t = torch.cartesian_prod(*([grid] * self.C)).reshape(-1, self.C)
        logp = self.log_prob(t, h.unsqueeze(-2))
        return Support(t, logp, tail)

    def closed_form_constants(self, h: torch.Tensor, restricted: bool = False,
                              sigma_max: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if restricted:
            return {}
        lam = torch.exp(h)
        lmax, lmin = lam.max(-1).values, lam.min(-1).values
        return {"sigma_min": lmin, "sigma_max": lmax,
                "M_max": lmax + 2 * lmax ** 2, "K_max": lmax + 3 * lmax ** 2,
                "M_min_lower": lmin / self.C + 2 * lmin ** 2,
                "K_min_lower": lmin / self.C + 3 * lmin ** 2}
