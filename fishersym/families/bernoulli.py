"""Bernoulli output (logistic regression / binary classification), THEORY.md §4 row 2.

h = logit p, t(y) = y ∈ {0, 1}, F(h) = log(1 + eʰ), Σ = p(1−p) = s.
Central moments of r = y − p: E r⁴ = s(1 − 3s), so κ₄ = s(1 − 6s) and
N·V₁ = M(u,u,u,u) = s(1 − 4s)u⁴ = p(1−p)(1−2p)²u⁴ (zero at p = ½), N·V₂ = s w².
With C = 1 every constant of Theorem 4.1 is exact.
"""
from __future__ import annotations

from typing import Sequence

import sympy as sp
import torch
import torch.nn.functional as Fn

from .base import ExponentialFamily, Support, batch_shape
from .links import Link, get_link

__all__ = ["Bernoulli"]


class Bernoulli(ExponentialFamily):
    name = "bernoulli"
    discrete = True

    def __init__(self, link: str | Link | None = None):
        super().__init__(1, get_link(link, None) if link is not None else None)

    def log_partition_sym(self, h: Sequence[sp.Expr]) -> sp.Expr:
        return sp.log(1 + sp.exp(h[0]))

    def mean_params_sym(self) -> dict[sp.Expr, sp.Expr]:
        p = sp.Symbol("p", positive=True)
        return {self.h_sym[0]: sp.log(p / (1 - p))}

    # numeric closed forms
    def log_partition(self, h: torch.Tensor) -> torch.Tensor:
        return Fn.softplus(h).sum(-1)

    def mean(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(h)

    def sigma(self, h: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(h)
        return (p * (1 - p)).unsqueeze(-1)

    def _s(self, h: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = torch.sigmoid(h)
        if u.dim() == h.dim() + 1:
            p = p.unsqueeze(-2)
        return p, u

    def sigma_quad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        p, u = self._s(h, u)
        return (p * (1 - p) * u * u).sum(-1).expand(batch_shape(h, u))

    def m4(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        p, u = self._s(h, u)
        s = p * (1 - p)
        return (s * (1 - 3 * s) * u ** 4).sum(-1).expand(batch_shape(h, u))

    def kappa4(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        p, u = self._s(h, u)
        s = p * (1 - p)
        return (s * (1 - 6 * s) * u ** 4).sum(-1).expand(batch_shape(h, u))

    def mquad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        p, u = self._s(h, u)
        return (p * (1 - p) * (1 - 2 * p) ** 2 * u ** 4).sum(-1).expand(batch_shape(h, u))

    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.check_h(h)
        p = torch.sigmoid(h).expand(n, *h.shape)
        return torch.bernoulli(p, generator=generator)

    def log_base_measure(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros(t.shape[:-1], dtype=t.dtype, device=t.device)

    def support(self, h: torch.Tensor, tail: float = 0.0) -> Support:
        t = torch.tensor([[0.0], [1.0]], dtype=h.dtype, device=h.device)
        logp = torch.stack([-Fn.softplus(h[..., 0]), -Fn.softplus(-h[..., 0])], dim=-1)
        return Support(t, logp, 0.0)

    def support_radius_sq(self, h: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(h[..., 0])
        return torch.maximum(p, 1 - p) ** 2

    def closed_form_constants(self, h: torch.Tensor, restricted: bool = False,
                              sigma_max: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if restricted:
            return {}
        p = torch.sigmoid(h[..., 0])
        s = p * (1 - p)
        m, k = s * (1 - 2 * p) ** 2, s * (1 - 3 * s)
        return {"sigma_min": s, "sigma_max": s, "M_min": m, "M_max": m, "K_min": k, "K_max": k}
