"""Structural layers: nn.Flatten (a reshape), nn.Identity, and Dropout in eval mode (the identity).

All are linear with no parameters: jac_t is a reshape (Flatten) or the identity; no curvature.
"""
from __future__ import annotations

from torch import nn
from typing_extensions import override

from .base import LayerRule


class FlattenRule(LayerRule):
    """The rule of nn.Flatten: a reshape, whose jac_t reshapes the rows back."""
    types = (nn.Flatten,)
    jacobian_constant = True
    piecewise_linear = True
    linear_in_params = True
    doc = "nn.Flatten (start_dim ≥ 1): a reshape; jac_t reshapes the rows back"

    @override
    def check(self, module):
        if module.start_dim == 0 or (module.end_dim == 0):
            return "nn.Flatten with start_dim=0 or end_dim=0 merges the batch dimension (use start_dim ≥ 1)"
        return ""

    @override
    def forward(self, module, x):
        return module(x), tuple(x.shape[1:])

    @override
    def jac_t(self, module, shape, M):
        return M.reshape(M.shape[:2] + shape)


class IdentityRule(LayerRule):
    """The rule of nn.Identity and of the Dropout variants in eval mode: the identity map."""
    types = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
             nn.FeatureAlphaDropout)
    jacobian_constant = True
    piecewise_linear = True
    linear_in_params = True
    doc = "nn.Identity, and Dropout variants in eval mode (or p = 0): the identity map"

    @override
    def check(self, module):
        if isinstance(module, nn.Identity):
            return ""
        if module.training and module.p > 0:
            return (f"{type(module).__name__} is in training mode (p = {module.p}): its output is random; "
                    "call model.eval() first")
        return ""

    @override
    def forward(self, module, x):
        return x, None

    @override
    def jac_t(self, module, cache, M):
        return M
