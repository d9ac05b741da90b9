"""Off-diagonal bounds (THEORY §5: Theorem C.1, Corollary C.3).

For two parameters θ_i, θ_j and one input, the off-diagonal entries of the
estimators are Î₁_ij = (1/N)Σ_k (u_iᵀr_k)(u_jᵀr_k) and
Î₂_ij = u_iᵀΣu_j − (1/N)Σ_k w_ijᵀ r_k with w_ij = ∂²h/∂θ_i∂θ_j, so

    N·Var Î₁_ij = M(u_i,u_j,u_i,u_j) = M₄(u_i,u_i,u_j,u_j) − (u_iᵀΣu_j)²
               ≤ ‖u_i‖²‖u_j‖² sup_{‖a‖=‖b‖=1} M(a,b,a,b)          (Theorem C.1)
    N·Var Î₂_ij = w_ijᵀΣw_ij ≤ ‖w_ij‖² λ_max(Σ)                     (Corollary C.3)

M(a,b,a,b) = (a⊗b)ᵀ M̄ (a⊗b) with ‖a⊗b‖ = 1, so λ_max(M̄) certifies the sup.

Floating point (issue 13 items 16, 22): ‖u_i‖², ‖u_j‖², ‖w_ij‖² are sums of ``n_terms`` = C rounded
squares (relative error ≤ γ_{C+1} each) and the bounds are products of ≤ 3 of them and a constant,
divided by N (≤ 4 roundings): the var1 bound is widened by (2C + 8)ε relative, the var2 bound by
(C + 8)ε, so that it stays above the exact product of the exact norms.  The constants ``mbar_max`` and
``sigma_max`` must be certified (widened) by the caller.
"""
from __future__ import annotations

import torch

__all__ = ["offdiag_bounds"]


def offdiag_bounds(ui_sq: torch.Tensor, uj_sq: torch.Tensor, wij_sq: torch.Tensor, mbar_max: torch.Tensor,
                   sigma_max: torch.Tensor, n_samples: int = 1, *, n_terms: int = 1) -> dict[str, torch.Tensor]:
    """Certified upper bounds on Var Î₁_ij and Var Î₂_ij (shapes broadcast), widened for the rounding
    of the norms (sums of ``n_terms`` squares, the output dimension C) and of the products (module
    docstring)."""
    N = float(n_samples)
    eps = torch.finfo(ui_sq.dtype).eps
    return {"offdiag_var1_upper": ui_sq * uj_sq * mbar_max / N * (1 + (2 * n_terms + 8) * eps),
            "offdiag_var2_upper": wij_sq * sigma_max / N * (1 + (n_terms + 8) * eps)}
