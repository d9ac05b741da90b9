"""nn.Conv1d and nn.Conv2d (stride, padding incl. 'same'/'valid', dilation, groups; zero padding).

y[o, pos] = b[o] + Σ_{c ∈ group(o), κ} W[o, c, κ] · x̃[c, stride·pos + dilation·κ]  with x̃ the
zero-padded input.  Linear in x and in (W, b):

* jac_t: the transposed convolution of the rows (``torch.nn.grad.conv{1,2}d_input``), cropped
  to the unpadded input;
* param_u (THEORY §12): weights are shared across positions, so per input
  u[b, :, o, c, κ] = Σ_pos G[b, :, o, pos] · unfold(x̃)[b, (c, κ), pos]  (dense), u_b = Σ_pos G;
* param_w: the base rule's exact w = Σ_k R_k (F_k · ∂y/∂θ)² over the rows F (dense; its cost
  grows with the number of non-linear units above the layer, THEORY §12).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from typing_extensions import override
import torch.nn.functional as Fn
from torch import nn

from .base import LayerRule

if TYPE_CHECKING:
    from torch.nn.modules.conv import _ConvNd


def _pads(module: _ConvNd) -> list[tuple[int, int]]:
    """(left, right) zero padding per spatial dimension, torch's convention for 'same'
    (total d·(k−1), the extra element on the right)."""
    k, d = module.kernel_size, module.dilation
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return [(0, 0)] * len(k)
        tot = [di * (ki - 1) for ki, di in zip(k, d)]
        return [(t // 2, t - t // 2) for t in tot]
    return [(p, p) for p in module.padding]


class ConvRule(LayerRule):
    """The rule of nn.Conv1d/Conv2d: dense u and w through the unfolded input."""
    types = (nn.Conv1d, nn.Conv2d)
    piecewise_linear = True
    linear_in_params = True
    jacobian_constant = True
    doc = "nn.Conv1d/Conv2d (stride, padding, dilation, groups; zero padding): dense u and w via unfold"

    @override
    def check(self, module):
        if module.padding_mode != "zeros":
            return (f"{type(module).__name__} with padding_mode={module.padding_mode!r} is not supported by the "
                    "per-layer engine (only 'zeros')")
        return ""

    @override
    def forward(self, module, x):
        if x.dim() != len(module.kernel_size) + 2:
            raise ValueError(f"{type(module).__name__} needs batched input of {len(module.kernel_size) + 2} "
                             f"dimensions (B, C, …); got shape {tuple(x.shape)}")
        pads = _pads(module)
        flat = [p for lr in reversed(pads) for p in lr]             # F.pad order: last dim first
        xp = Fn.pad(x, flat) if any(flat) else x
        conv = Fn.conv1d if isinstance(module, nn.Conv1d) else Fn.conv2d
        y = conv(xp, module.weight, module.bias, module.stride, 0, module.dilation, module.groups)
        return y, (xp, pads)

    @override
    def jac_t(self, module, cache, M):
        xp, pads = cache
        B, K = M.shape[:2]
        Mf = M.reshape((B * K,) + tuple(M.shape[2:]))
        grad_in = torch.nn.grad.conv1d_input if isinstance(module, nn.Conv1d) else torch.nn.grad.conv2d_input
        g = grad_in((B * K,) + tuple(xp.shape[1:]), module.weight, Mf, module.stride, 0, module.dilation,
                    module.groups)
        idx = (slice(None), slice(None)) + tuple(slice(l, n - r) for (l, r), n in zip(pads, xp.shape[2:]))
        g = g[idx]
        return g.reshape((B, K) + tuple(g.shape[1:]))

    @staticmethod
    def _unfold(module, xp: torch.Tensor) -> torch.Tensor:
        """unfold(x̃) grouped: (B, groups, Cin/groups · kernel size, positions)."""
        if isinstance(module, nn.Conv1d):
            x4, ks = xp.unsqueeze(2), (1,) + tuple(module.kernel_size)
            st, dl = (1,) + tuple(module.stride), (1,) + tuple(module.dilation)
        else:
            x4, ks, st, dl = xp, tuple(module.kernel_size), tuple(module.stride), tuple(module.dilation)
        unf = Fn.unfold(x4, ks, dilation=dl, padding=0, stride=st)        # (B, Cin·kk, L)
        return unf.view(xp.shape[0], module.groups, -1, unf.shape[-1])

    @override
    def param_u(self, module, cache, G):
        xp, _ = cache
        B, K, Cout = G.shape[:3]
        g = module.groups
        unf = self._unfold(module, xp)                                      # (B, g, Cin/g·kk, L)
        L = unf.shape[-1]
        Gg = G.reshape(B, K, g, Cout // g, L)
        u = torch.einsum("bkgol,bgil->bkgoi", Gg, unf).reshape((B, K) + tuple(module.weight.shape))
        out = {"weight": u}
        if module.bias is not None:
            out["bias"] = Gg.sum(-1).reshape(B, K, Cout)
        return out

    def param_w_units(self, module, cache, R):
        """Rows = the identity on the outputs (e.g. Conv → Tanh): F_k·∂y/∂W[o,c,κ] = δ(o, o_k) unfold(x̃)[c κ, pos_k],
        so w[b, a, o, c, κ] = Σ_pos R[b, a, (o, pos)] · unfold(x̃)[b, c κ, pos]²  (one contraction)."""
        xp, _ = cache
        B, C = R.shape[:2]
        Cout, g = module.out_channels, module.groups
        unf = self._unfold(module, xp)
        Rg = R.reshape(B, C, g, Cout // g, unf.shape[-1])
        w = torch.einsum("bagol,bgil->bagoi", Rg, unf * unf).reshape((B, C) + tuple(module.weight.shape))
        out = {"weight": w}
        if module.bias is not None:
            out["bias"] = Rg.sum(-1).reshape(B, C, Cout)
        return out
