"""Per-parameter bounds of Theorem 4.1 (THEORY.md §5), one definition for both engines.

For one input x, parameter θ_i with u_i = ∂h/∂θ_i and w_i = ∂²h/∂θ_i², and N
label samples:

    (7)  ‖u_i‖² λ_min(Σ)  ≤ I(θ_i|x)    ≤ ‖u_i‖² λ_max(Σ)
    (8)  ‖u_i‖⁴ λ̃_min(M) ≤ N·V₁(θ_i|x) ≤ ‖u_i‖⁴ λ̃_max(M)
    (9)  ‖w_i‖² λ_min(Σ)  ≤ N·V₂(θ_i|x) ≤ ‖w_i‖² λ_max(Σ)

The *certified* keys use constants that provably enclose the true ones
(:mod:`fishersym.families.constants`), so they always hold; the ``_opt``
keys use the optimised λ̃ of the paper (a local optimum can understate
λ̃_max, so those may fail and are reported, not trusted).  The ``_sharp``
keys (shift-invariant families only, [beyond]) use the norms of the
projections onto 𝟙^⊥ and the constants over unit vectors of 𝟙^⊥; they hold
because N·V₁, N·V₂ and I are unchanged by u ↦ u + c𝟙, w ↦ w + c𝟙.

Result key names (shared by ``fishersym.numeric`` and ``fishersym.symbolic``):
"""
from __future__ import annotations

from typing import Mapping

import torch

from ..families.constants import FamilyConstants

__all__ = ["STAT_KEYS", "BOUND_KEYS", "OPT_KEYS", "SHARP_KEYS", "theorem41_bounds", "check_bounds"]

#: the exact quantities
STAT_KEYS = ("fisher", "var1", "var2")
#: certified Theorem 4.1 bounds (always hold)
BOUND_KEYS = ("fisher_lower", "fisher_upper", "var1_lower", "var1_upper", "var2_lower", "var2_upper")
#: the paper's optimised-λ̃ bounds on V₁ (Σ's spectrum is computed exactly, so I and V₂ need none)
OPT_KEYS = ("var1_lower_opt", "var1_upper_opt")
#: sharpened 𝟙^⊥ bounds for shift-invariant families (certified, and optimised for V₁)
SHARP_KEYS = ("fisher_lower_sharp", "fisher_upper_sharp", "var1_lower_sharp", "var1_upper_sharp",
              "var2_lower_sharp", "var2_upper_sharp", "var1_lower_sharp_opt", "var1_upper_sharp_opt")

__doc__ += "\n".join(f"    {k}" for k in STAT_KEYS + BOUND_KEYS + OPT_KEYS + SHARP_KEYS)


def _expand(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-input constant (batch,) against per-parameter values (batch, ...)."""
    return c.reshape(c.shape + (1,) * (like.dim() - c.dim()))


def theorem41_bounds(u_sq: torch.Tensor, w_sq: torch.Tensor, consts: FamilyConstants,
                     n_samples: int = 1, suffix: str = "") -> dict[str, torch.Tensor]:
    """Theorem 4.1 bounds for squared norms ‖u_i‖², ‖w_i‖² of shape (batch, ...).

    ``consts`` are the family constants at the same inputs (batch,).  With
    ``suffix="_sharp"`` pass the 𝟙^⊥-projected norms and restricted constants.
    Returns the certified keys, and the ``_opt`` V₁ keys when ``consts`` holds
    optimised values.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples}")
    N = float(n_samples)
    u4 = u_sq * u_sq
    e = lambda c: _expand(c, u_sq)  # noqa: E731
    out = {
        f"fisher_lower{suffix}": u_sq * e(consts.sigma_min_cert),
        f"fisher_upper{suffix}": u_sq * e(consts.sigma_max_cert),
        f"var1_lower{suffix}": u4 * e(consts.M_min_cert) / N,
        f"var1_upper{suffix}": u4 * e(consts.M_max_cert) / N,
        f"var2_lower{suffix}": w_sq * e(consts.sigma_min_cert) / N,
        f"var2_upper{suffix}": w_sq * e(consts.sigma_max_cert) / N,
    }
    if consts.M_min_opt is not None:
        out[f"var1_lower{suffix}_opt"] = u4 * e(consts.M_min_opt) / N
        out[f"var1_upper{suffix}_opt"] = u4 * e(consts.M_max_opt) / N
    return out


def check_bounds(values: Mapping[str, torch.Tensor], rtol: float = 1e-9, atol: float = 0.0,
                 keys: tuple[str, ...] = ("", "_sharp")) -> list[str]:
    """Names of violated certified bounds in a result mapping (empty when all hold)."""
    bad = []
    for sfx in keys:
        for q in STAT_KEYS:
            lo, hi = values.get(f"{q}_lower{sfx}"), values.get(f"{q}_upper{sfx}")
            v = values[q]
            if lo is not None and not bool((lo <= v + rtol * v.abs() + atol).all()):
                bad.append(f"{q}_lower{sfx}")
            if hi is not None and not bool((v <= hi + rtol * hi.abs() + atol).all()):
                bad.append(f"{q}_upper{sfx}")
    return bad
