"""Off-diagonal bounds (THEORY.md §5: Theorem C.1, Corollary C.3).

For two parameters θ_i, θ_j and one input, the off-diagonal entries of the
estimators are Î₁_ij = (1/N)Σ_k (u_iᵀr_k)(u_jᵀr_k) and
Î₂_ij = u_iᵀΣu_j − (1/N)Σ_k w_ijᵀ r_k with w_ij = ∂²h/∂θ_i∂θ_j, so

    N·Var Î₁_ij = M(u_i,u_j,u_i,u_j) = M₄(u_i,u_i,u_j,u_j) − (u_iᵀΣu_j)²
               ≤ ‖u_i‖²‖u_j‖² sup_{‖a‖=‖b‖=1} M(a,b,a,b)          (Theorem C.1)
    N·Var Î₂_ij = w_ijᵀΣw_ij ≤ ‖w_ij‖² λ_max(Σ)                     (Corollary C.3)

M(a,b,a,b) = (a⊗b)ᵀ M̄ (a⊗b) with ‖a⊗b‖ = 1, so λ_max(M̄) certifies the sup.
"""
from __future__ import annotations

import torch

__all__ = ["offdiag_bounds"]


def offdiag_bounds(ui_sq: torch.Tensor, uj_sq: torch.Tensor, wij_sq: torch.Tensor, mbar_max: torch.Tensor,
                   sigma_max: torch.Tensor, n_samples: int = 1) -> dict[str, torch.Tensor]:
    """Certified upper bounds on Var Î₁_ij and Var Î₂_ij (shapes broadcast)."""
    N = float(n_samples)
    return {"offdiag_var1_upper": ui_sq * uj_sq * mbar_max / N,
            "offdiag_var2_upper": wij_sq * sigma_max / N}
