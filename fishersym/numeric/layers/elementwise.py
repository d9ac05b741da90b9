"""Every elementwise activation of the registry :mod:`fishersym.activations` (THEORY §7, §12).

One rule class, one instance per module type (read from the activation registry
:data:`fishersym.activations.TYPES`):

    y = σ(x),   jac_t(M) = M ⊙ σ'(x),   curvature(G) = G ⊙ σ''(x)  (units = the inputs x),

and ``curvature`` is None when the registry flags σ as piecewise linear (σ'' ≡ 0 a.e.).
Derivative conventions at kinks are the registry's (those of torch's autograd).
nn.Identity and Dropout are handled by the structural rules of ``flatten.py``.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn
from typing_extensions import override

from ...activations import TYPES
from . import flatten  # noqa: F401  (structural rules first: they own Identity and Dropout)
from .base import RULES, LayerRule, register


class ElementwiseRule(LayerRule):
    """σ applied entrywise; σ, σ', σ'' from the activation registry."""

    def __init__(self, module_type: type[nn.Module], fn: Callable, piecewise_linear: bool):
        self.types = (module_type,)  # type: ignore[misc]
        self.fn = fn
        self.piecewise_linear = piecewise_linear
        self.linear_in_params = True          # no parameters
        self.doc = (f"nn.{module_type.__name__} (elementwise; "
                    f"{'piecewise linear, no curvature' if piecewise_linear else 'curvature G·σ″(x)'})")

    @override
    def forward(self, module, x):
        y, d1, d2 = self.fn(module, x)
        return y, (d1, d2)

    @override
    def jac_t(self, module, cache, M):
        return M * cache[0].unsqueeze(1)

    @override
    def curvature(self, module, cache, G):
        if self.piecewise_linear:
            return None
        return G * cache[1].unsqueeze(1)


for _t, _spec in TYPES.items():
    if _t not in RULES:                      # Identity, Dropout: structural rules of flatten.py
        register(ElementwiseRule(_t, _spec.numeric, _spec.piecewise_linear))
