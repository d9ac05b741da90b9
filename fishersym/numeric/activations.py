"""Elementwise activations of the fast MLP path with their first two derivatives (THEORY §7).

The recursion of THEORY §7 needs σ_l, σ'_l and σ''_l at each pre-activation.  They come from
the activation registry :mod:`fishersym.activations` (one entry per activation, shared with the
symbolic engine, the per-layer rules and the hypothesis strategies); this module is the numeric
view of it.  Derivative conventions follow torch's autograd at the kinks (ReLU'(0) = 0,
LeakyReLU'(0) = slope, Hardtanh' = 0 at the clip points), so the fast and the generic path
agree exactly, and every σ', σ'' is evaluated in a cancellation-free form (issue 13 item 16).
Compositions of several elementwise modules (and the family's elementwise link at the top) are
handled by :func:`compose`: (φ∘ψ)' = φ'(ψ)ψ',  (φ∘ψ)'' = φ''(ψ)ψ'² + φ'(ψ)ψ''.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..activations import TYPES, Triple

__all__ = ["SUPPORTED", "derivs", "compose", "is_piecewise_linear", "is_elementwise"]

#: module type → (σ, σ', σ'') and whether σ'' ≡ 0 (THEORY §6 item 3), derived from the registry
#: (nn.Dropout is the identity entry's eval-mode type: the planners check the mode)
SUPPORTED: dict[type[nn.Module], tuple[Callable[..., Triple], bool]] = {
    t: (s.numeric, s.piecewise_linear) for t, s in TYPES.items()}


def is_elementwise(m: nn.Module) -> bool:
    """``m`` is an activation module of the registry (its exact type)."""
    return type(m) in SUPPORTED


def is_piecewise_linear(m: nn.Module) -> bool:
    """σ'' ≡ 0 a.e. for this activation module (KeyError for a module that is none)."""
    return SUPPORTED[type(m)][1]


def derivs(m: nn.Module, z: torch.Tensor) -> Triple:
    """(σ(z), σ'(z), σ''(z)) for a supported activation module."""
    return SUPPORTED[type(m)][0](m, z)


def compose(fns: list[Callable[[torch.Tensor], Triple]], z: torch.Tensor) -> Triple:
    """Value, first and second derivative of fₙ∘…∘f₁ at z (chain rule, THEORY §7)."""
    val, d1, d2 = z, torch.ones_like(z), torch.zeros_like(z)
    for f in fns:
        s, s1, s2 = f(val)
        d2 = s2 * d1 * d1 + s1 * d2
        d1 = s1 * d1
        val = s
    return val, d1, d2
