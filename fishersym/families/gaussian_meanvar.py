"""Gaussian output with learned mean and variance, THEORY.md §4 row 5.

The network outputs o = (μ, s = log σ²); the link maps them to the natural
parameters h = (μ/σ², −1/(2σ²)) (``MeanLogVar``), t(y) = (y, y²) and

    F(h) = −h₁²/(4h₂) − ½ log(−2h₂),
    Σ = [[σ², 2μσ²], [2μσ², 2σ²(2μ² + σ²)]].

Directional cumulants (derived here; THEORY gives κ₄ only "via κ₄"): with
y = μ + σz, uᵀt = const + a z + b z² where a = σ(u₁ + 2μu₂), b = σ²u₂, and
the cumulant generating function of a Gaussian quadratic gives

    uᵀΣu = a² + 2b²,   κ₄(u,u,u,u) = 48 b²(a² + b²).

The tests check these against nested forward-mode derivatives of F, SymPy's
∇⁴F and quadrature.  The constants of Theorem 4.1 are certified by the
eigenvalues of M̄ on the symmetric subspace.
"""
from __future__ import annotations

import math
from typing import Sequence

import sympy as sp
import torch

from .base import ExponentialFamily
from .links import Link, MeanLogVar, get_link

__all__ = ["GaussianMeanVar"]


class GaussianMeanVar(ExponentialFamily):
    name = "gaussian_meanvar"
    discrete = False

    def __init__(self, link: str | Link | None = None):
        super().__init__(2, get_link(link, MeanLogVar()), out_dim=2)

    def log_partition_sym(self, h: Sequence[sp.Expr]) -> sp.Expr:
        h1, h2 = h
        return -h1 ** 2 / (4 * h2) - sp.log(-2 * h2) / 2

    def mean_params_sym(self) -> dict[sp.Expr, sp.Expr]:
        mu, s = sp.Symbol("mu", real=True), sp.Symbol("sigma", positive=True)
        return {self.h_sym[0]: mu / s ** 2, self.h_sym[1]: -1 / (2 * s ** 2)}

    def _check_domain(self, h: torch.Tensor) -> None:
        if not (h[..., 1] < 0).all():
            raise ValueError("gaussian_meanvar: the second natural parameter h_2 = −1/(2σ²) must be < 0; "
                             "with the identity link the network must output a negative h_2 "
                             "(use the default 'meanlogvar' link to output (μ, log σ²))")

    def _mu_var(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        var = -0.5 / h[..., 1]
        return h[..., 0] * var, var

    def log_partition(self, h: torch.Tensor) -> torch.Tensor:
        h1, h2 = h[..., 0], h[..., 1]
        return -h1 * h1 / (4 * h2) - 0.5 * torch.log(-2 * h2)

    def mean(self, h: torch.Tensor) -> torch.Tensor:
        mu, var = self._mu_var(h)
        return torch.stack([mu, mu * mu + var], dim=-1)

    def sigma(self, h: torch.Tensor) -> torch.Tensor:
        mu, var = self._mu_var(h)
        row0 = torch.stack([var, 2 * mu * var], -1)
        row1 = torch.stack([2 * mu * var, 2 * var * (2 * mu * mu + var)], -1)
        return torch.stack([row0, row1], -2)

    def _ab(self, h: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, var = self._mu_var(h)
        if u.dim() == h.dim() + 1:
            mu, var = mu.unsqueeze(-1), var.unsqueeze(-1)
        a = var.sqrt() * (u[..., 0] + 2 * mu * u[..., 1])
        b = var * u[..., 1]
        return a, b

    def sigma_quad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        a, b = self._ab(h, u)
        return a * a + 2 * b * b

    def kappa4(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        a, b = self._ab(h, u)
        return 48 * b * b * (a * a + b * b)

    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.check_h(h)
        mu, var = self._mu_var(h)
        eps = torch.randn((n, *mu.shape), dtype=h.dtype, device=h.device, generator=generator)
        y = mu + var.sqrt() * eps
        return torch.stack([y, y * y], dim=-1)

    def log_base_measure(self, t: torch.Tensor) -> torch.Tensor:
        return torch.full(t.shape[:-1], -0.5 * math.log(2 * math.pi), dtype=t.dtype, device=t.device)
