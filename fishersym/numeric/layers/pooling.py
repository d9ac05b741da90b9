"""Pooling: nn.MaxPool1d/2d, nn.AvgPool1d/2d, nn.AdaptiveAvgPool1d/2d (THEORY §12: piecewise linear).

* Max pooling: y[c, p] = x[c, idx(c, p)] with torch's argmax indices (the same ones its autograd
  uses at ties), so jac_t scatters the rows back: out[b, k, c, idx] += M[b, k, c, p].
* Average pooling is linear in x: jac_t is the vector-Jacobian product of the functional op,
  applied to all B·K rows at once (its Jacobian does not depend on the point).
No parameters; no curvature.
"""
from __future__ import annotations

import math

import torch
from typing_extensions import override
import torch.nn.functional as Fn
from torch import nn

from .base import LayerRule


class MaxPoolRule(LayerRule):
    """The rule of nn.MaxPool1d/2d: y = x at the argmax indices (piecewise linear)."""
    types = (nn.MaxPool1d, nn.MaxPool2d)
    piecewise_linear = True
    linear_in_params = True
    doc = "nn.MaxPool1d/2d: y = x at torch's argmax indices; jac_t scatters rows to the indices"

    @override
    def check(self, module):
        if module.return_indices:
            return f"{type(module).__name__}(return_indices=True) returns a tuple; use return_indices=False"
        return ""

    @override
    def forward(self, module, x):
        op = Fn.max_pool1d if isinstance(module, nn.MaxPool1d) else Fn.max_pool2d
        y, idx = op(x, module.kernel_size, module.stride, module.padding, module.dilation,
                    ceil_mode=module.ceil_mode, return_indices=True)
        return y, (idx, tuple(x.shape[1:]))

    @override
    def jac_t(self, module, cache, M):
        idx, xshape = cache
        B, K = M.shape[:2]
        C = xshape[0]
        Mf = M.reshape(B, K, C, -1)
        ix = idx.reshape(B, 1, C, -1).expand_as(Mf)
        out = M.new_zeros(B, K, C, math.prod(xshape[1:]))
        out.scatter_add_(-1, ix, Mf)
        return out.reshape((B, K) + xshape)


class AvgPoolRule(LayerRule):
    """The rule of average pooling (fixed and adaptive, 1-D and 2-D): a linear map."""
    types = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
    jacobian_constant = True
    piecewise_linear = True
    linear_in_params = True
    doc = "nn.AvgPool1d/2d, AdaptiveAvgPool1d/2d: linear; jac_t = vjp of the functional op on all rows"

    @override
    def forward(self, module, x):
        return module(x), tuple(x.shape[1:])

    @override
    def jac_t(self, module, xshape, M):
        B, K = M.shape[:2]
        Mf = M.reshape((B * K,) + tuple(M.shape[2:]))
        _, vjp = torch.func.vjp(module, M.new_zeros((B * K,) + xshape))
        (g,) = vjp(Mf)
        return g.reshape((B, K) + xshape)
