"""Lemma 4.8 (THEORY §5, §8): the input-randomness term of the many-input variance.

    Var_q I(θ_i|x) ≤ E_q[I(θ_i|x)²] ≤ E_q[‖u_i‖⁴ λ_max(Σ(x))²],

since 0 ≤ I(θ_i|x) ≤ ‖u_i‖² λ_max(Σ) (Theorem 4.1 (7)).  This is the term
common to both estimators in the i.i.d.-inputs scheme of THEORY §8.
"""
from __future__ import annotations

import torch

__all__ = ["lemma48_bound"]


def lemma48_bound(u_sq: torch.Tensor, sigma_max: torch.Tensor) -> torch.Tensor:
    """Per-input integrand ‖u_i‖⁴ λ_max(Σ)² (batch, ...); average over inputs for the bound.

    ``u_sq`` (batch, ...) and ``sigma_max`` (batch,).  Also the per-row factor of a factored ‖u_i‖²
    (:class:`fishersym.numeric.parts.Part`, values f·a^p): (f·a^p)²·λ² = (f²·λ²)·a^{2p}, which is how
    :func:`fishersym.numeric.stats.dataset_batch_sums` uses it.

    >>> lemma48_bound(torch.tensor([[2.0, 1.0]]), torch.tensor([0.5])).tolist()     # (‖u‖²)²·λ² = 4/4, 1/4
    [[1.0, 0.25]]
    """
    c = sigma_max.reshape(sigma_max.shape + (1,) * (u_sq.dim() - sigma_max.dim()))
    return u_sq * u_sq * c * c
