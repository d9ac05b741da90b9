"""Runner: exact u and w for every parameter of an ``nn.Sequential`` from the per-layer rules.

THEORY §7 generalised by §12.  Layers f_0 … f_{L−1} in the order the Sequential's forward calls
them (nested Sequentials expanded; a shared parameter-free instance simply runs twice), x_0 = x,
x_{l+1} = f_l(x_l), h = x_L of shape (B, C).

* Forward once, keeping each rule's cache.
* First order: G_L = I_C, G_l = jac_t_l(G_{l+1}) (B, C, *x_l-shape); u of layer l's parameters
  = param_u_l(G_{l+1}).
* Second order (exact, §12: w_{a,i} = Σ_{m,j} R^m_{a,j} (∂z^m_j/∂θ_i)²): walking down from the top,
  keep factor rows F (B, K, *x_{l+1}-shape), F[b, k] = ∂z_k/∂x_{l+1}, for the K non-linear units
  z_k met so far, and their residuals R (B, C, K), one block per non-linear layer (no
  concatenation).  At layer l: w of its parameters = Σ_blocks param_w_l(F, R); then
  F ← jac_t_l(F); then, if f_l is not piecewise linear, its units (its inputs x_l) join as a new
  block with F = identity and R = curvature_l(G_{l+1}) (units whose residual is 0 for every input
  and output are left out: they add exactly 0).  The identity rows are formed lazily: the layer
  just below may take them implicitly (``param_w_units``: Linear gives R_j·x_k², Conv one
  contraction with unfold(x)²); when formed they are shared by all inputs (a stride-0 batch
  dimension) and stay shared through layers with a constant Jacobian, so for Linear the next
  product is R^{m}(W^{m})² once for the batch, as in THEORY §7.
* When every layer above a parameter's layer is linear or piecewise linear, w ≡ 0 exactly
  (its layer is linear in it, §12); the value is a :class:`ProvedZero` carrying the reason and
  no second-order work is done for it.

Memory: first order, G_l is B × C × n_l (n_l the per-input size of x_l) and u is B × C × P_l per
parameter tensor (dense for convolutions, B × C × (n_out + n_in) factored for Linear).  Second
order, the factor rows are B × K × n_l numbers (K the number of non-linear units above layer l with
a non-zero residual, at most their total size; rows shared by the batch count once), the default
``param_w`` adds one block of at most ``W_CHUNK`` elements.  The runner computes an upper bound of
the second-order peak (every block counted as per-input) before the pass and refuses above
``max_bytes``.

The computation itself is the DAG runner of :mod:`.graph` applied to the chain (a Sequential is
the graph with one consumer per node); this module only decomposes the Sequential.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .base import LayerRule
from .graph import DEFAULT_MAX_BYTES, ParamQuantities, chain_plan, run_graph

__all__ = ["ParamQuantities", "SequentialPlan", "plan_sequential", "layer_quantities", "DEFAULT_MAX_BYTES"]


class SequentialPlan(NamedTuple):
    """An nn.Sequential as its steps: module paths, modules, rules and parameter names."""
    names: list[str]                       # module path of each step ("0", "3.1", …)
    modules: list[nn.Module]
    rules: list[LayerRule]
    params: list[dict[str, str]]           # per step: local parameter name → model parameter name


def _steps(seq: nn.Sequential, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The modules in the order ``seq.forward`` calls them (``_modules`` keeps a shared instance
    under each of its names; ``named_children`` would drop the repeats)."""
    out = []
    for name, m in seq._modules.items():
        if m is None:
            continue
        if type(m) is nn.Sequential:
            out.extend(_steps(m, f"{prefix}{name}."))
        else:
            out.append((f"{prefix}{name}", m))
    return out


def plan_sequential(model: nn.Module) -> tuple[SequentialPlan | None, str]:
    """Decompose ``model`` into supported layers; (None, reason) when it cannot be."""
    if type(model) is not nn.Sequential:
        return None, f"the model is a {type(model).__name__}, not an nn.Sequential"
    graph, why = chain_plan(_steps(model), model, "nn.Sequential")
    if graph is None:
        return None, why
    layers = graph.nodes[1:]
    return SequentialPlan([n.name for n in layers], [n.module for n in layers], [n.layer_rule for n in layers],
                          [n.params for n in layers]), ""


def layer_quantities(model: nn.Module, x: torch.Tensor, *, second_order: bool = True,
                     max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[torch.Tensor, dict[str, ParamQuantities]]:
    """(h, {parameter name: (u, w)}) for a batch x, exact, from the per-layer rules (THEORY §7, §12).

    h = model(x) must have shape (B, C).  u and w have shape (B, C, *θ.shape) each (dense tensors,
    :class:`Factored`, or :class:`ProvedZero`; see :class:`ParamQuantities`); with
    ``second_order=False`` w is not computed (None) unless proved 0.
    Raises ValueError when the model is not supported (the reason names the module) or when the
    second-order pass would need more than ``max_bytes``."""
    if type(model) is not nn.Sequential:
        raise ValueError(f"the per-layer engine cannot handle this model: the model is a {type(model).__name__}, "
                         "not an nn.Sequential")
    graph, why = chain_plan(_steps(model), model, "nn.Sequential")
    if graph is None:
        raise ValueError(f"the per-layer engine cannot handle this model: {why}")
    with torch.no_grad():
        return run_graph(graph, x, second_order=second_order, max_bytes=max_bytes)
