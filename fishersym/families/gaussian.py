"""Gaussian output with fixed variance σ² (regression), THEORY.md §4 row 1.

h = μ/σ², t(y) = y ∈ ℝ^C, F(h) = σ²‖h‖²/2, Σ = σ²I, κ₄ = 0, so
N·V₁ = M(u,u,u,u) = 2σ⁴‖u‖⁴ and N·V₂ = σ²‖w‖².  Proposition 5.1 (σ² = 1):
every constant of Theorem 4.1 is exact (λ(Σ) = σ², λ̃(M) = 2σ⁴, λ̃(K) = 3σ⁴).
"""
from __future__ import annotations

import math
from typing import Sequence

import sympy as sp
import torch

from .base import ExponentialFamily, batch_shape
from .links import Link, Scale, get_link

__all__ = ["Gaussian"]


class Gaussian(ExponentialFamily):
    name = "gaussian"
    discrete = False

    def __init__(self, C: int = 1, sigma2: float = 1.0, link: str | Link | None = None):
        if not isinstance(C, int) or C < 1:
            raise ValueError(f"gaussian: C must be a positive integer, got {C!r}")
        if not isinstance(sigma2, (int, float)) or not math.isfinite(sigma2) or sigma2 <= 0:
            raise ValueError(f"gaussian: the variance sigma2 must be a finite number > 0, got {sigma2!r}")
        self.sigma2 = float(sigma2)
        self._s2 = sp.Symbol("sigma^2", positive=True)
        if link == "mean":  # the network outputs μ; h = μ/σ²
            link = Scale(1.0 / self.sigma2, 1 / self._s2)
        super().__init__(C, get_link(link, None) if link is not None else None)

    @property
    def sym_params(self) -> dict[sp.Symbol, float]:
        return {self._s2: self.sigma2}

    def log_partition_sym(self, h: Sequence[sp.Expr]) -> sp.Expr:
        return self._s2 * sp.Add(*[hi ** 2 for hi in h]) / 2

    # numeric closed forms (THEORY §4)
    def log_partition(self, h: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.sigma2 * (h * h).sum(-1)

    def mean(self, h: torch.Tensor) -> torch.Tensor:
        return self.sigma2 * h

    def sigma(self, h: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.C, dtype=h.dtype, device=h.device)
        return (self.sigma2 * eye).expand(*h.shape[:-1], self.C, self.C).clone()

    def sigma_quad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.sigma2 * (u * u).sum(-1).expand(batch_shape(h, u))

    def kappa4(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return torch.zeros(batch_shape(h, u), dtype=h.dtype, device=h.device)

    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.check_h(h)
        eps = torch.randn((n, *h.shape), dtype=h.dtype, device=h.device, generator=generator)
        return self.mean(h) + math.sqrt(self.sigma2) * eps

    def log_base_measure(self, t: torch.Tensor) -> torch.Tensor:
        return -(t * t).sum(-1) / (2 * self.sigma2) - 0.5 * self.C * math.log(2 * math.pi * self.sigma2)

    def closed_form_constants(self, h: torch.Tensor, restricted: bool = False,
                              sigma_max: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if restricted:
            return {}
        one = torch.ones(h.shape[:-1], dtype=h.dtype, device=h.device)
        s2 = self.sigma2
        return {"sigma_min": s2 * one, "sigma_max": s2 * one,
                "M_min": 2 * s2 ** 2 * one, "M_max": 2 * s2 ** 2 * one,
                "K_min": 3 * s2 ** 2 * one, "K_max": 3 * s2 ** 2 * one}

