"""Elementwise activations of the fast MLP path with their first two derivatives (THEORY.md §7).

The recursion of THEORY §7 needs σ_l, σ'_l and σ''_l at each pre-activation.
Derivative conventions follow torch's autograd at the kinks (ReLU'(0) = 0,
LeakyReLU'(0) = slope, Hardtanh' = 0 at the clip points), so the fast and the
generic path agree exactly.  Compositions of several elementwise modules (and
the family's elementwise link at the top) are handled by :func:`compose`:
(φ∘ψ)' = φ'(ψ)ψ',  (φ∘ψ)'' = φ''(ψ)ψ'² + φ'(ψ)ψ''.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

__all__ = ["SUPPORTED", "derivs", "compose", "is_piecewise_linear", "is_elementwise"]

Triple = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _sigmoid(m, z):
    s = torch.sigmoid(z)
    d1 = s * (1 - s)
    return s, d1, d1 * (1 - 2 * s)


def _tanh(m, z):
    t = torch.tanh(z)
    d1 = 1 - t * t
    return t, d1, -2 * t * d1


def _relu(m, z):
    pos = (z > 0).to(z.dtype)
    return torch.relu(z), pos, torch.zeros_like(z)


def _leaky(m, z):
    s = m.negative_slope
    d1 = torch.where(z > 0, torch.ones_like(z), torch.full_like(z, s))
    return torch.nn.functional.leaky_relu(z, s), d1, torch.zeros_like(z)


def _hardtanh(m, z):
    inside = ((z > m.min_val) & (z < m.max_val)).to(z.dtype)
    return torch.clamp(z, m.min_val, m.max_val), inside, torch.zeros_like(z)


def _elu(m, z):
    # σ'' jumps at z = 0 (α on the left, 0 on the right); torch's autograd (forward and
    # reverse, hence the generic path and the label-space oracle) takes σ''(0) = 0.
    al = m.alpha
    ez = al * torch.exp(torch.clamp(z, max=0))
    pos = z > 0
    return (torch.where(pos, z, ez - al), torch.where(pos, torch.ones_like(z), ez),
            torch.where(z >= 0, torch.zeros_like(z), ez))


def _softplus(m, z):
    beta, thr = m.beta, m.threshold
    lin = beta * z > thr
    s = torch.sigmoid(beta * z)
    return (torch.nn.functional.softplus(z, beta, thr), torch.where(lin, torch.ones_like(z), s),
            torch.where(lin, torch.zeros_like(z), beta * s * (1 - s)))


def _gelu(m, z):
    if m.approximate == "tanh":
        k, c = math.sqrt(2 / math.pi), 0.044715
        u = k * (z + c * z ** 3)
        u1, u2 = k * (1 + 3 * c * z * z), 6 * k * c * z
        t = torch.tanh(u)
        sech2 = 1 - t * t
        return (0.5 * z * (1 + t), 0.5 * (1 + t) + 0.5 * z * sech2 * u1,
                sech2 * u1 + 0.5 * z * sech2 * (u2 - 2 * t * u1 * u1))
    phi = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    Phi = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    return z * Phi, Phi + z * phi, phi * (2 - z * z)


def _silu(m, z):
    s = torch.sigmoid(z)
    d = s * (1 - s)
    return z * s, s + z * d, 2 * d + z * d * (1 - 2 * s)


def _identity(m, z):
    return z, torch.ones_like(z), torch.zeros_like(z)


#: module type → (σ, σ', σ'') and whether σ'' ≡ 0 (THEORY §6 item 3)
SUPPORTED: dict[type, tuple[Callable[..., Triple], bool]] = {
    nn.Sigmoid: (_sigmoid, False),
    nn.Tanh: (_tanh, False),
    nn.ReLU: (_relu, True),
    nn.LeakyReLU: (_leaky, True),
    nn.Hardtanh: (_hardtanh, True),
    nn.ELU: (_elu, False),
    nn.Softplus: (_softplus, False),
    nn.GELU: (_gelu, False),
    nn.SiLU: (_silu, False),
    nn.Identity: (_identity, True),
    nn.Dropout: (_identity, True),  # eval mode only (checked by the planner)
}


def is_elementwise(m: nn.Module) -> bool:
    return type(m) in SUPPORTED or (isinstance(m, nn.Hardtanh) and type(m) in (nn.ReLU6,))


def is_piecewise_linear(m: nn.Module) -> bool:
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
