"""nn.LayerNorm (elementwise affine or not): normalisation over the last dimensions (THEORY §12).

Per position (the leading dimensions of one input) with the D normalised entries x: c = x − mean(x),
s = √(var(x) + ε) (biased variance), n = c/s, y = γ ⊙ n + β (γ = 1, β = 0 without affine).
P = I − 𝟙𝟙ᵀ/D centres a vector.

* jac_t:  Jᵀm = (P m̃ − n (nᵀm̃)/D)/s with m̃ = m ⊙ γ (the Jacobian is (1/s)(I − nnᵀ/D)P).
* param_u:  u_γ = Σ_pos G ⊙ n,  u_β = Σ_pos G  (linear in γ, β: its own w terms are 0).
* Second order (not elementwise, not piecewise linear): for a direction v of x and p = Pv, with
  g_a = ∂h_a/∂n = G_a ⊙ γ, g̃_a = P g_a, τ_a = g_aᵀn, k = 1/(D s²), the Hessian quadratic form is

      Σ_j g_{a,j} vᵀ∇²n_j v = k [ −2 (nᵀv)(g̃_aᵀv) − τ_a |p|² + (3/D) τ_a (nᵀv)² ]

  (from d²n = k·[−2 p (nᵀp) − n|p|² + (3/D) n (nᵀp)²] along v; checked against autograd in the tests).
  It is written exactly as a sum of squares of 2D + 1 rows per position (``second_order_rows``):
  r±_j = n ± P e_j with residuals −k(τ_a ± g̃_{a,j})/2, and r₀ = n with residual k τ_a (D + 3/D);
  indeed Σ_j [α_j(nᵀv + p_j)² + β_j(nᵀv − p_j)²] = (α_j + β_j)((nᵀv)² + p_j²) + 2(α_j − β_j) p_j nᵀv.
  The rows are block-diagonal over positions: F is (B, S(2D+1), *x-shape), B·S²·D·(2D+1) numbers
  for S positions per input.
"""
from __future__ import annotations

import math

import torch
from typing_extensions import override
import torch.nn.functional as Fn
from torch import nn

from .base import LayerRule


class LayerNormRule(LayerRule):
    """The rule of nn.LayerNorm: exact Jacobian, and its Hessian as squared rows."""
    types = (nn.LayerNorm,)
    linear_in_params = True
    doc = "nn.LayerNorm: exact Jacobian and its full Hessian as 2D+1 squared rows per position"

    @override
    def check(self, module):
        if not isinstance(module.normalized_shape, tuple) or not module.normalized_shape:
            return f"nn.LayerNorm with normalized_shape={module.normalized_shape!r} is not supported"
        return ""

    @override
    def forward(self, module, x):
        nd = len(module.normalized_shape)
        if tuple(x.shape[x.dim() - nd:]) != tuple(module.normalized_shape) or x.dim() <= nd:
            raise ValueError(f"nn.LayerNorm{tuple(module.normalized_shape)} got input of shape {tuple(x.shape)}")
        y = Fn.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)
        D = math.prod(module.normalized_shape)
        B = x.shape[0]
        xf = x.reshape(B, -1, D)                                    # (B, S, D)
        c = xf - xf.mean(-1, keepdim=True)
        s = torch.sqrt((c * c).mean(-1, keepdim=True) + module.eps)  # (B, S, 1)
        n = c / s
        return y, (n, s, tuple(x.shape[1:]), D)

    @staticmethod
    def _gamma(module, D, like):
        return None if module.weight is None else module.weight.reshape(D).to(like.dtype)

    @override
    def jac_t(self, module, cache, M):
        n, s, xshape, D = cache
        B, K = M.shape[:2]
        m = M.reshape(B, K, -1, D)                                  # (B, K, S, D)
        gam = self._gamma(module, D, M)
        if gam is not None:
            m = m * gam
        m = m - m.mean(-1, keepdim=True)                            # P m̃
        nm = (m * n.unsqueeze(1)).sum(-1, keepdim=True)             # nᵀ P m̃ = nᵀ m̃
        out = (m - n.unsqueeze(1) * nm / D) / s.unsqueeze(1)
        return out.reshape((B, K) + xshape)

    @override
    def param_u(self, module, cache, G):
        n, s, xshape, D = cache
        B, K = G.shape[:2]
        Gf = G.reshape(B, K, -1, D)
        out = {}
        if module.weight is not None:
            out["weight"] = (Gf * n.unsqueeze(1)).sum(2).reshape((B, K) + tuple(module.weight.shape))
        if module.bias is not None:
            out["bias"] = Gf.sum(2).reshape((B, K) + tuple(module.bias.shape))
        return out

    @override
    def second_order_rows(self, module, cache, G):
        n, s, xshape, D = cache
        B, C = G.shape[:2]
        S = n.shape[1]
        g = G.reshape(B, C, S, D)
        gam = self._gamma(module, D, G)
        if gam is not None:
            g = g * gam
        k = 1.0 / (D * s * s)                                       # (B, S, 1)
        tau = (g * n.unsqueeze(1)).sum(-1, keepdim=True)            # (B, C, S, 1)
        gt = g - g.mean(-1, keepdim=True)                           # g̃
        kk = k.unsqueeze(1)
        alpha = -kk * (tau + gt) / 2
        beta = -kk * (tau - gt) / 2
        r0 = kk * tau * (D + 3.0 / D)
        R = torch.cat([alpha, beta, r0], -1).reshape(B, C, S * (2 * D + 1))
        Pe = torch.eye(D, dtype=n.dtype, device=n.device) - 1.0 / D   # rows P e_j (symmetric)
        nn_ = n.unsqueeze(2)                                        # (B, S, 1, D)
        local = torch.cat([nn_ + Pe, nn_ - Pe, nn_], 2)             # (B, S, 2D+1, D)
        eyeS = torch.eye(S, dtype=n.dtype, device=n.device)
        F = local.unsqueeze(3) * eyeS.reshape(1, S, 1, S, 1)        # (B, S, 2D+1, S, D) block-diagonal
        return F.reshape((B, S * (2 * D + 1)) + xshape), R
