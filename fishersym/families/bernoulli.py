"""Bernoulli output (logistic regression / binary classification), THEORY §4 row 2.

h = logit p, t(y) = y ∈ {0, 1}, F(h) = log(1 + eʰ), Σ = p(1−p) = s.
Central moments of r = y − p: E r⁴ = s(1 − 3s), so κ₄ = s(1 − 6s) and
N·V₁ = M(u,u,u,u) = s(1 − 4s)u⁴ = p(1−p)(1−2p)²u⁴ (zero at p = ½), N·V₂ = s w².
With C = 1 every constant of Theorem 4.1 is exact.

Numerically (issue 13 item 16) nothing is formed as p(1 − p) or 1 − 2p with p = σ(h), which lose
every digit at |h| ≳ 20 (float64) or ≳ 9 (float32): s = p(1−p) = σ(h)σ(−h) and 1 − 2p = −tanh(h/2)
are evaluated directly, each to a few ulp at any h, so every form and constant is accurate to a
small relative error ((1 − 2p)² = tanh²(h/2) keeps its relative accuracy near p = ½ as well).
"""
from __future__ import annotations

from collections.abc import Sequence

import sympy as sp
import torch
import torch.nn.functional as Fn
from typing_extensions import override

from .base import ExponentialFamily, Support, batch_shape
from .links import Link, get_link

__all__ = ["Bernoulli"]


class Bernoulli(ExponentialFamily):
    """Bernoulli output (logistic regression / binary classification), THEORY §4 row 2.

    F(h) = log(1 + eʰ), C = 1, N·V₁ = p(1−p)(1−2p)²u⁴ (module docstring).

    Args:
        link: the link from the network's output o to h = logit p (default: the identity, h = o).
    """

    name = "bernoulli"
    discrete = True
    display_probabilities = True

    @override
    def latex_conclusions(self) -> list[str]:
        return ["\\item At $p = \\tfrac12$, $V_1 = 0$ for every parameter (the factor $(1-2p)^2$), so $\\hat I_1$ "
                "is exact there and wins wherever $w_i \\neq 0$.\n"]

    fuzz_output_cap = 50.0   # σ(h)σ(−h) and tanh(h/2) stay accurate when saturated (module docstring)

    @property
    def p_sym(self) -> sp.Symbol:
        """The display coordinate p = η = σ(h)."""
        return sp.Symbol("p", positive=True)

    def display_domain(self) -> dict[sp.Symbol, sp.Set]:
        """p ∈ (0, 1)."""
        return {self.p_sym: sp.Interval.open(0, 1)}

    def display_positivity_subs(self) -> dict[sp.Symbol, sp.Expr]:
        """p = 1/(1 + t), t > 0, so that 1 − p = t/(1 + t) is visibly positive."""
        return {self.p_sym: 1 / (1 + sp.Symbol("t_pos", positive=True))}

    def symbolic_theorems(self) -> dict:
        """``bernoulli_half``: SymPy proves V₁ = 0 at p = ½ for every parameter (THEORY §4)."""
        from ..symbolic.theorems import bernoulli_half_zero
        return {"bernoulli_half": bernoulli_half_zero}

    def __init__(self, link: str | Link | None = None):
        super().__init__(1, get_link(link, None) if link is not None else None)

    @override
    def log_partition_sym(self, h: Sequence[sp.Expr]) -> sp.Expr:
        return sp.log(1 + sp.exp(h[0]))

    @override
    def mean_params_sym(self) -> dict[sp.Expr, sp.Expr]:
        p = self.p_sym
        return {self.h_sym[0]: sp.log(p / (1 - p))}

    # numeric closed forms
    @override
    def log_partition(self, h: torch.Tensor) -> torch.Tensor:
        return Fn.softplus(h).sum(-1)

    @override
    def mean(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(h)

    @staticmethod
    def _s_t(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, t) = (p(1−p), 1 − 2p) in stable form: σ(h)σ(−h) and −tanh(h/2)."""
        return torch.sigmoid(h) * torch.sigmoid(-h), -torch.tanh(h / 2)

    @override
    def sigma(self, h: torch.Tensor) -> torch.Tensor:
        return self._s_t(h)[0].unsqueeze(-1)

    def _s(self, h: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s, t = self._s_t(h)
        if u.dim() == h.dim() + 1:
            s, t = s.unsqueeze(-2), t.unsqueeze(-2)
        return s, t, u

    @override
    def sigma_quad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        s, _, u = self._s(h, u)
        return (s * u * u).sum(-1).expand(batch_shape(h, u))

    def m4(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """E r⁴ u⁴ = s(1 − 3s)u⁴ (1 − 3s ≥ ¼: no cancellation)."""
        s, _, u = self._s(h, u)
        return (s * (1 - 3 * s) * u ** 4).sum(-1).expand(batch_shape(h, u))

    def kappa4(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """κ₄ = s(1 − 6s)u⁴ with 1 − 6s = t² − 2s (t = 1 − 2p, 1 − 4s = t²): a difference of two
        accurately computed terms (κ₄ changes sign, so its relative accuracy near the root is lost
        by any formula; the absolute error is ≤ 4ε·s(t² + 2s)u⁴)."""
        s, t, u = self._s(h, u)
        return (s * (t * t - 2 * s) * u ** 4).sum(-1).expand(batch_shape(h, u))

    def mquad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """N·V₁ = s·t²·u⁴ = p(1−p)(1−2p)²u⁴ with s = σ(h)σ(−h), t = −tanh(h/2)."""
        s, t, u = self._s(h, u)
        return (s * t * t * u ** 4).sum(-1).expand(batch_shape(h, u))

    def mbar(self, h: torch.Tensor) -> torch.Tensor:
        """M̄ = Cov[r²] = E r⁴ − s² = s(1 − 4s) = p q (p − q)² = σ(h)σ(−h)·tanh²(h/2), shape (..., 1, 1)
        (C = 1; THEORY §3, §4).  The base class forms it as mat(M₄) − vec(Σ)vec(Σ)ᵀ from the autodiff
        moment tensors, a difference that loses every digit at |h| ≳ 20 (issue 13 items 16, 22); here it is
        a product of factors with relative error ≤ 4ε each (σ, tanh: ≤ 2 ulp; h/2 exact), so the entry has
        relative error ≤ 16ε and is never negative."""
        h = self.check_h(h)
        s, t = self._s_t(h[..., 0])
        return (s * t * t)[..., None, None]

    #: N·V₁ = s·t²·u⁴ is a product of accurate factors (no cancellation).  Rounding bound of
    #: ``quad_forms(error=True)`` (base.py): every factor has relative error ≤ 4ε (σ, tanh: ≤ 2 ulp
    #: each; h/2 exact), 9 roundings in the product: 16ε·N·V₁ (C = 1)
    mquad_cancels = False
    quad_error_factor = 16

    @override
    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.check_h(h)
        p = torch.sigmoid(h).expand(n, *h.shape)
        return torch.bernoulli(p, generator=generator)

    def check_statistic(self, t: torch.Tensor) -> torch.Tensor:
        """Observed labels must be 0 or 1 (t(y) = y)."""
        t = super().check_statistic(t)
        bad = (t != 0) & (t != 1)
        if bad.any():
            raise ValueError(f"bernoulli: observed labels must be 0 or 1, got {t[bad].reshape(-1)[:3].tolist()}; "
                             "for labels in {-1, 1} pass (y + 1) / 2")
        return t

    @override
    def log_base_measure(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros(t.shape[:-1], dtype=t.dtype, device=t.device)

    @override
    def support(self, h: torch.Tensor, tail: float = 0.0) -> Support:
        t = torch.tensor([[0.0], [1.0]], dtype=h.dtype, device=h.device)
        logp = torch.stack([-Fn.softplus(h[..., 0]), -Fn.softplus(-h[..., 0])], dim=-1)
        return Support(t, logp, 0.0)

    def support_radius_sq(self, h: torch.Tensor) -> torch.Tensor:
        """max(p, 1 − p)² = σ(|h|)²."""
        return torch.sigmoid(h[..., 0].abs()) ** 2

    def sym2_extremes(self, h: torch.Tensor, tensor: str = "M", restricted: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(λ_min, λ_max) of M̄ or mat(K) on Sym²(ℝ¹) = ℝ: the single entry, M = s t² or K = s(1 − 3s),
        from the stable forms and widened by 16ε relative (each is a product of ≤ 4 factors with
        relative error ≤ 4ε), instead of the nested autodiff of softplus, which loses every digit at
        |h| ≳ 20 (issue 13 item 16)."""
        if restricted:
            raise ValueError("bernoulli: the sharpened (𝟙^⊥) constants apply to shift-invariant families only")
        if tensor not in ("M", "K"):
            raise ValueError(f"tensor must be 'M' or 'K', got {tensor!r}")
        s, t = self._s_t(h[..., 0])
        v = s * t * t if tensor == "M" else s * (1 - 3 * s)
        w = 16 * torch.finfo(v.dtype).eps * v
        return v - w, v + w

    def closed_form_constants(self, h: torch.Tensor, restricted: bool = False,
                              sigma_max: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Exact constants (C = 1): λ(Σ) = s, λ̃(M) = s t², λ̃(K) = s(1 − 3s), stable forms."""
        if restricted:
            return {}
        s, t = self._s_t(h[..., 0])
        m, k = s * t * t, s * (1 - 3 * s)
        return {"sigma_min": s, "sigma_max": s, "M_min": m, "M_max": m, "K_min": k, "K_max": k}
