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

__all__ = ["STAT_KEYS", "BOUND_KEYS", "OPT_KEYS", "SHARP_KEYS", "BOUND_CONSTANTS", "bound_name", "theorem41_bounds", "check_bounds"]

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


#: the family constant (a :class:`~fishersym.families.constants.FamilyConstants` field) of each bound
BOUND_CONSTANTS = {"fisher_lower": "sigma_min_cert", "fisher_upper": "sigma_max_cert",
                   "var1_lower": "M_min_cert", "var1_upper": "M_max_cert",
                   "var2_lower": "sigma_min_cert", "var2_upper": "sigma_max_cert",
                   "var1_lower_opt": "M_min_opt", "var1_upper_opt": "M_max_opt"}


def theorem41_bounds(u_sq: torch.Tensor, w_sq: torch.Tensor, consts: FamilyConstants,
                     n_samples: int = 1, suffix: str = "", keys=None) -> dict[str, torch.Tensor]:
    """Theorem 4.1 bounds for squared norms ‖u_i‖², ‖w_i‖² of shape (batch, ...).

    ``consts`` are the family constants at the same inputs (batch,).  With
    ``suffix="_sharp"`` pass the 𝟙^⊥-projected norms and restricted constants.
    Returns the certified keys, and the ``_opt`` V₁ keys when ``consts`` holds
    optimised values; ``keys`` (names without the suffix, e.g. ``{"fisher_upper"}``; default all)
    restricts the work to those.  Each bound is the product of one norm and one constant
    (:data:`BOUND_CONSTANTS`), divided by N for the variances (not for N = 1: x/1 = x exactly).

    >>> import torch
    >>> from fishersym import families
    >>> from fishersym.families.constants import family_constants
    >>> c = family_constants(families.get("categorical", C=3), torch.zeros(1, 3), restricted=False, use_eig=False)
    >>> b = theorem41_bounds(torch.tensor([[2.0]]), torch.tensor([[1.0]]), c, keys={"fisher_upper"})
    >>> sorted(b), round(float(b["fisher_upper"]), 4)     # ‖u‖²·λ_max(Σ) = 2·(1/3)
    (['fisher_upper'], 0.6667)
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples}")
    N = float(n_samples)
    want = [k for k in BOUND_CONSTANTS if (keys is None or k in keys)
            and (not k.endswith("_opt") or consts.M_min_opt is not None)]
    u4 = u_sq * u_sq if any(k.startswith("var1") for k in want) else None
    out = {}
    for k in want:
        c = getattr(consts, BOUND_CONSTANTS[k])
        c = c.reshape(c.shape + (1,) * (u_sq.dim() - c.dim()))
        v = (u_sq if k.startswith("fisher") else u4 if k.startswith("var1") else w_sq) * c
        out[bound_name(k, suffix)] = v if k.startswith("fisher") or N == 1.0 else v / N
    return out


def bound_name(key: str, suffix: str = "") -> str:
    """The result key of bound ``key`` (a :data:`BOUND_CONSTANTS` name) with ``suffix``:
    ``var1_upper`` + ``_sharp`` → ``var1_upper_sharp``, ``var1_upper_opt`` + ``_sharp`` → ``var1_upper_sharp_opt``."""
    return key[:-4] + suffix + "_opt" if key.endswith("_opt") else key + suffix


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
