"""Trace-variance bounds per parameter group (THEORY.md §5: Theorem D.1, Corollary 4.6).

For a group of parameters with Jacobian J = ∂h/∂θ (C × P), columns u_i, and
diagonal second derivatives w_i:

    tr I = Σ_i u_iᵀΣu_i = tr(Σ JJᵀ),
    N·Σ_i V₁ = Σ_i (u_i⊗u_i)ᵀ M̄ (u_i⊗u_i) = tr(M̄ UUᵀ),   U = [vec(u_i u_iᵀ)]_i (C² × P),
    N·Σ_i V₂ = tr(Σ WWᵀ),   W = [w_i]_i.

**Theorem D.1** (Ruhe's trace inequality: for symmetric A, B with eigenvalues
α, β in decreasing order, Σ_t α_t β_{n−t+1} ≤ tr(AB) ≤ Σ_t α_t β_t) applied to
each pair.  UUᵀ lives on the symmetric subspace Sym² of ℝ^C⊗ℝ^C, so M̄ and
UUᵀ are compressed to Sym² (dimension C(C+1)/2) first; this is the same
inequality on a smaller space and only tightens the lower bound.

**Corollary 4.6** (our derivation; the printed form in our copy of the paper is
garbled, THEORY §5).  Only the Frobenius norms ‖J‖_F² = Σ_i‖u_i‖² and
Σ_i‖w_i‖² are needed:

    λ_min(Σ)‖J‖_F² ≤ tr I ≤ λ_max(Σ)‖J‖_F²,
    λ̃_min(M)‖J‖_F⁴ / P ≤ N·Σ_i V₁ ≤ λ̃_max(M)‖J‖_F⁴,
    λ_min(Σ)Σ_i‖w_i‖² ≤ N·Σ_i V₂ ≤ λ_max(Σ)Σ_i‖w_i‖².

Proof: sum Theorem 4.1 over i, then (Σ_i‖u_i‖²)²/P ≤ Σ_i‖u_i‖⁴ ≤ (Σ_i‖u_i‖²)²
(Cauchy–Schwarz, and non-negative cross terms).  The tests check every
inequality on random models against the exact traces.
"""
from __future__ import annotations

import torch

from ..families.constants import FamilyConstants, eig_margin, sym_basis

__all__ = ["ruhe_bounds", "theorem_d1", "corollary46", "TRACE_KEYS"]

TRACE_KEYS = ("trace_fisher", "trace_var1", "trace_var2")


def ruhe_bounds(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper) of tr(AB) for symmetric A, B (..., n, n) by Ruhe's inequality, widened by
    the computed eigenvalues' error bounds δa, δb (n·(δa·max|b| + max|a|·δb)) so they hold in
    floating point."""
    a = torch.linalg.eigvalsh(A).flip(-1)   # decreasing
    b = torch.linalg.eigvalsh(B)            # increasing
    n = A.shape[-1]
    slack = n * (eig_margin(A) * b.abs().amax(-1) + a.abs().amax(-1) * eig_margin(B))
    return (a * b).sum(-1) - slack, (a * b.flip(-1)).sum(-1) + slack


def theorem_d1(JJ: torch.Tensor, UU: torch.Tensor | None, WW: torch.Tensor, sigma: torch.Tensor,
               mbar: torch.Tensor | None, n_samples: int = 1) -> dict[str, torch.Tensor]:
    """Theorem D.1 bounds per input (B,): keys trace_{fisher,var1,var2}_{lower,upper}_d1.

    JJ, WW, sigma: (B, C, C); UU, mbar: (B, C², C²) (omitted V₁ keys when None).
    """
    N = float(n_samples)
    out = {}
    lo, hi = ruhe_bounds(sigma, JJ)
    out["trace_fisher_lower_d1"], out["trace_fisher_upper_d1"] = lo, hi
    lo, hi = ruhe_bounds(sigma, WW)
    out["trace_var2_lower_d1"], out["trace_var2_upper_d1"] = lo / N, hi / N
    if UU is not None and mbar is not None:
        C = sigma.shape[-1]
        S = sym_basis(C, sigma.dtype, sigma.device)
        lo, hi = ruhe_bounds(S.T @ mbar @ S, S.T @ UU @ S)
        out["trace_var1_lower_d1"], out["trace_var1_upper_d1"] = lo.clamp_min(0) / N, hi / N
    return out


def corollary46(frob_u2: torch.Tensor, sum_w2: torch.Tensor, n_params: int, consts: FamilyConstants,
                n_samples: int = 1, opt: bool = False) -> dict[str, torch.Tensor]:
    """Corollary 4.6 (derived form, see module docstring) per input (B,), certified constants."""
    N = float(n_samples)
    out = {
        "trace_fisher_lower_c46": consts.sigma_min_cert * frob_u2,
        "trace_fisher_upper_c46": consts.sigma_max_cert * frob_u2,
        "trace_var1_lower_c46": consts.M_min_cert * frob_u2 ** 2 / n_params / N,
        "trace_var1_upper_c46": consts.M_max_cert * frob_u2 ** 2 / N,
        "trace_var2_lower_c46": consts.sigma_min_cert * sum_w2 / N,
        "trace_var2_upper_c46": consts.sigma_max_cert * sum_w2 / N,
    }
    if opt and consts.M_max_opt is not None:
        out["trace_var1_lower_c46_opt"] = consts.M_min_opt * frob_u2 ** 2 / n_params / N
        out["trace_var1_upper_c46_opt"] = consts.M_max_opt * frob_u2 ** 2 / N
    return out
