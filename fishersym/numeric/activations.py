"""Elementwise activations of the fast MLP path with their first two derivatives (THEORY.md §7).

The recursion of THEORY §7 needs σ_l, σ'_l and σ''_l at each pre-activation.
Derivative conventions follow torch's autograd at the kinks (ReLU'(0) = 0,
LeakyReLU'(0) = slope, Hardtanh' = 0 at the clip points), so the fast and the
generic path agree exactly.  Compositions of several elementwise modules (and
the family's elementwise link at the top) are handled by :func:`compose`:
(φ∘ψ)' = φ'(ψ)ψ',  (φ∘ψ)'' = φ''(ψ)ψ'² + φ'(ψ)ψ''.

Every σ', σ'' is evaluated in a cancellation-free form (issue 13 item 16): no
1 − σ(z), 1 − tanh²(z) or 1 + erf(z) of a saturated unit, so the relative
error stays within a few ulps times the condition number of the function
at any pre-activation (tested against mpmath at 50 digits, |z| ≤ 50).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

__all__ = ["SUPPORTED", "derivs", "compose", "is_piecewise_linear", "is_elementwise"]

Triple = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _sigmoid_d(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """σ, σ' = σ(z)σ(−z), σ'' = σ'·(1 − 2σ) = −σ'·tanh(z/2): no 1 − σ(z), which rounds to 0 for
    z ≳ 17 (float32) / 37 (float64) and loses digits from |z| ≈ 1 on (issue 13 item 16)."""
    s = torch.sigmoid(z)
    d1 = s * torch.sigmoid(-z)
    return s, d1, -d1 * torch.tanh(0.5 * z)


def _sech2(z: torch.Tensor) -> torch.Tensor:
    """1/cosh²(z) = 1 − tanh²(z) without the cancellation (relative error a few ulps)."""
    r = 1.0 / torch.cosh(z)                    # (1/c)² rather than 1/c²: c² overflows first
    return r * r


def _sigmoid(m, z):
    return _sigmoid_d(z)


def _tanh(m, z):
    t = torch.tanh(z)
    d1 = _sech2(z)
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
    # α(e^z − 1) as α·expm1(z): no cancellation for small negative z.
    al = m.alpha
    zn = torch.clamp(z, max=0)
    ez = al * torch.exp(zn)
    pos = z > 0
    return (torch.where(pos, z, al * torch.expm1(zn)), torch.where(pos, torch.ones_like(z), ez),
            torch.where(z >= 0, torch.zeros_like(z), ez))


def _softplus(m, z):
    # torch's Softplus is linear where βz > threshold (its autograd: σ' = 1, σ'' = 0 there)
    beta, thr = m.beta, m.threshold
    lin = beta * z > thr
    s, d1, d2 = _sigmoid_d(beta * z)
    return (torch.nn.functional.softplus(z, beta, thr), torch.where(lin, torch.ones_like(z), s),
            torch.where(lin, torch.zeros_like(z), beta * d1))


def _gelu(m, z):
    if m.approximate == "tanh":
        # 0.5(1 + tanh u) = σ(2u) and sech²u without cancellation (u → −∞ and u → +∞)
        k, c = math.sqrt(2 / math.pi), 0.044715
        u = k * (z + c * z ** 3)
        u1, u2 = k * (1 + 3 * c * z * z), 6 * k * c * z
        t = torch.tanh(u)
        half = torch.sigmoid(2 * u)
        sech2 = _sech2(u)
        return (z * half, half + 0.5 * z * sech2 * u1,
                sech2 * u1 + 0.5 * z * sech2 * (u2 - 2 * t * u1 * u1))
    # Φ(z) = erfc(−z/√2)/2: no 1 + erf(z/√2) cancellation for z → −∞
    phi = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    Phi = 0.5 * torch.erfc(-z / math.sqrt(2))
    return z * Phi, Phi + z * phi, phi * (2 - z * z)


def _silu(m, z):
    # σ' = σ(z)σ(−z), 1 − 2σ = −tanh(z/2) (see _sigmoid_d)
    s, d, _ = _sigmoid_d(z)
    return z * s, s + z * d, d * (2 - z * torch.tanh(0.5 * z))


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
