"""nn.Embedding: y[b, s, :] = W[idx[b, s], :] for integer inputs idx (THEORY §12: linear in W).

* param_u: u[b, :, v, d] = Σ_{s: idx[b,s] = v} G[b, :, s, d]  (a scatter of G into the rows of W; dense
  (B, C, V, D));
* param_w: the base rule's Σ_k R_k (F_k·∂y/∂W)² (squares of the scattered rows), and with the identity
  rows on the outputs (``param_w_units``) w[b, a, v, d] = Σ_{s: idx = v} R[b, a, s, d];
* jac_t: the input is integer, so nothing flows below an Embedding; it must read the model's input.

``padding_idx``, ``max_norm`` and ``scale_grad_by_freq`` are refused: the first two make torch's
autograd derivative differ from the derivative of the map (the padding row gets no gradient;
max_norm renormalises W in place during the forward), the third rescales gradients by frequency.
"""
from __future__ import annotations

import torch
from typing_extensions import override
import torch.nn.functional as Fn
from torch import nn

from .base import LayerRule


class EmbeddingRule(LayerRule):
    """The rule of nn.Embedding on integer inputs: u scatters G into the used rows."""
    types = (nn.Embedding,)
    jacobian_constant = True
    piecewise_linear = True
    linear_in_params = True
    doc = "nn.Embedding on integer inputs: u scatters G into the rows of the weight"

    @override
    def check(self, module):
        for attr, ok in (("padding_idx", None), ("max_norm", None), ("scale_grad_by_freq", False)):
            if getattr(module, attr) != ok:
                return (f"nn.Embedding with {attr}={getattr(module, attr)!r} is not supported by the per-layer "
                        f"engine (torch's gradient then differs from the derivative of the map); use {attr}={ok!r}")
        return ""

    @override
    def forward(self, module, x):
        if x.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"nn.Embedding needs integer token ids (int64 or int32); got {x.dtype}")
        return Fn.embedding(x, module.weight), x

    @override
    def jac_t(self, module, cache, M):
        raise ValueError("nothing flows below an nn.Embedding: its input is integer (it must read the model's input)")

    def _scatter(self, module, idx, G):
        B, K = G.shape[:2]
        V, D = module.weight.shape
        Gf = G.reshape(B, K, -1, D)                                 # (B, K, S, D)
        ix = idx.reshape(B, 1, -1, 1).expand_as(Gf)
        out = G.new_zeros(B, K, V, D)
        out.scatter_add_(2, ix, Gf)
        return out

    @override
    def param_u(self, module, idx, G):
        return {"weight": self._scatter(module, idx, G)}

    @override
    def param_w_units(self, module, idx, R):
        return {"weight": self._scatter(module, idx, R)}
