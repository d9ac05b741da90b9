"""nn.BatchNorm1d/2d in eval mode: an affine map per channel (THEORY §12: linear).

With running statistics μ_c, v_c: x̂ = (x − μ_c)/√(v_c + ε), y = γ_c x̂ + β_c (γ = 1, β = 0 without
affine).  jac_t(M) = M · s_c with s_c = γ_c/√(v_c + ε);  u_γ[b, :, c] = Σ_pos G[b, :, c, pos] x̂[b, c, pos],
u_β[b, :, c] = Σ_pos G[b, :, c, pos].  Training mode (or no running statistics) makes one input's
output depend on the batch and is refused.
"""
from __future__ import annotations

import torch
from typing_extensions import override
from torch import nn

from .base import LayerRule


class BatchNormRule(LayerRule):
    """The rule of nn.BatchNorm1d/2d in eval mode: a per-channel affine map."""
    types = (nn.BatchNorm1d, nn.BatchNorm2d)
    jacobian_constant = True
    piecewise_linear = True
    linear_in_params = True
    doc = "nn.BatchNorm1d/2d in eval mode with running statistics: per-channel affine map"

    @override
    def check(self, module):
        if module.training:
            return (f"{type(module).__name__} is in training mode: each input's output depends on the batch; "
                    "call model.eval() first")
        if module.running_mean is None or module.running_var is None:
            return (f"{type(module).__name__}(track_running_stats=False) normalises with batch statistics even "
                    "in eval mode: each input's output depends on the batch")
        return ""

    @staticmethod
    def _chan(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t.reshape((1, -1) + (1,) * (x.dim() - 2))

    @override
    def forward(self, module, x):
        if x.dim() not in ((2, 3) if isinstance(module, nn.BatchNorm1d) else (4,)):
            raise ValueError(f"{type(module).__name__} got input of shape {tuple(x.shape)}")
        inv = torch.rsqrt(module.running_var + module.eps)
        xh = (x - self._chan(module.running_mean, x)) * self._chan(inv, x)
        scale = inv if module.weight is None else module.weight * inv
        y = xh if module.weight is None else xh * self._chan(module.weight, x)
        if module.bias is not None:
            y = y + self._chan(module.bias, x)
        return y, (xh, scale)

    @override
    def jac_t(self, module, cache, M):
        xh, scale = cache
        return M * scale.reshape((1, 1, -1) + (1,) * (M.dim() - 3))

    @override
    def param_u(self, module, cache, G):
        xh, _ = cache
        B, K, Cch = G.shape[:3]
        Gf = G.reshape(B, K, Cch, -1)
        out = {}
        if module.weight is not None:
            out["weight"] = (Gf * xh.reshape(B, 1, Cch, -1)).sum(-1)
        if module.bias is not None:
            out["bias"] = Gf.sum(-1)
        return out
