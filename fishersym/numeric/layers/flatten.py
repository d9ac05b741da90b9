"""Structural layers: nn.Flatten (a reshape), nn.Identity, and Dropout in eval mode (the identity).

All are linear with no parameters: jac_t is a reshape (Flatten) or the identity; no curvature.
"""
from __future__ import annotations

from torch import nn

from .base import LayerRule


class FlattenRule(LayerRule):
    types = (nn.Flatten,)
    jacobian_constant = True
    piecewise_linear = True
    linear_in_params = True
    doc = "nn.Flatten (start_dim ≥ 1): a reshape; jac_t reshapes the rows back"

    def check(self, module):
        if module.start_dim == 0 or (module.end_dim == 0):
            return "nn.Flatten with start_dim=0 or end_dim=0 merges the batch dimension (use start_dim ≥ 1)"
        return ""

    def forward(self, module, x):
        return module(x), tuple(x.shape[1:])

    def jac_t(self, module, shape, M):
        return M.reshape(M.shape[:2] + shape)


class IdentityRule(LayerRule):
    types = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
             nn.FeatureAlphaDropout)
    jacobian_constant = True
    piecewise_linear = True
    linear_in_params = True
    doc = "nn.Identity, and Dropout variants in eval mode (or p = 0): the identity map"

    def check(self, module):
        if isinstance(module, nn.Identity):
            return ""
        if module.training and module.p > 0:
            return (f"{type(module).__name__} is in training mode (p = {module.p}): its output is random; "
                    "call model.eval() first")
        return ""

    def forward(self, module, x):
        return x, None

    def jac_t(self, module, cache, M):
        return M
