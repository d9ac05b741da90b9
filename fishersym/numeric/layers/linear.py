"""nn.Linear: y = x Wᵀ + b on (B, *, n_in) inputs (THEORY §7).

With G = ∂h/∂y and inputs x of shape (B, n_in) everything factors (THEORY §7):

    u[b, :, j, k] = G[b, :, j] · x[b, k],            u_b = G,
    w[b, :, j, k] = (R @ F²)[b, :, j] · x[b, k]²,     w_b = R @ F²,

(F² elementwise), stored as :class:`Factored` (f, a = x, p).  With extra middle dimensions
(B, S…, n_in) the sum over positions does not factor and the values are dense:
u[b, :, j, k] = Σ_s G[b, :, s, j] x[b, s, k].
"""
from __future__ import annotations

import torch
from typing_extensions import override
from torch import nn

from .base import Factored, LayerRule, batch_shared


class LinearRule(LayerRule):
    """The rule of nn.Linear: factored u = G_j·x_k and w = (R F²)_j·x_k² (THEORY §7)."""
    types = (nn.Linear,)
    piecewise_linear = True
    linear_in_params = True
    jacobian_constant = True
    doc = "nn.Linear on (B, *, n_in): factored u = G_j·x_k and w = (R F²)_j·x_k² for 2-D inputs"

    @override
    def forward(self, module, x):
        return torch.nn.functional.linear(x, module.weight, module.bias), x

    @override
    def jac_t(self, module, cache, M):
        return M @ module.weight

    @override
    def param_u(self, module, x, G):
        out = {}
        if x.dim() == 2:
            out["weight"] = Factored(G, x, 1)
            if module.bias is not None:
                out["bias"] = G
            return out
        B, K = G.shape[:2]
        Gf = G.reshape(B, K, -1, G.shape[-1])                       # (B, K, S, out)
        xf = x.reshape(B, -1, x.shape[-1])                          # (B, S, in)
        out["weight"] = torch.einsum("bksj,bsi->bkji", Gf, xf)
        if module.bias is not None:
            out["bias"] = Gf.sum(2)
        return out

    @override
    def param_w(self, module, x, F, R):
        if x.dim() != 2:
            return super().param_w(module, x, F, R)
        B, C, K = R.shape
        if batch_shared(F):                                         # one product for all inputs (THEORY §7)
            D = (R.reshape(B * C, K) @ F[0].square()).view(B, C, -1)
        else:
            D = torch.bmm(R, F * F)                                 # (B, C, out)
        out = {"weight": Factored(D, x, 2)}
        if module.bias is not None:
            out["bias"] = D
        return out

    def param_w_units(self, module, x, R):
        """Rows = the identity on the outputs (Linear → σ): w = R_j · x_k², w_b = R (THEORY §7, m = l)."""
        if x.dim() != 2:
            return None
        out = {"weight": Factored(R, x, 2)}
        if module.bias is not None:
            out["bias"] = R
        return out
