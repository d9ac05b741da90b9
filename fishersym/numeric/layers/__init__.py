"""Per-layer rules of the fast exact engine (THEORY §7, §12), one file per layer type.

The protocol (:class:`~.base.LayerRule`) is specified in ``base.py``; the rules register
themselves in :data:`~.base.RULES` on import.  :func:`~.sequential.layer_quantities` runs them
over an ``nn.Sequential`` and returns exact u = ∂h/∂θ and w = ∂²h/∂θ² for every parameter;
:mod:`.graph` is the runner itself, for any DAG of rules (``torch.fx`` traces with residual additions),
and :mod:`.engine` (``plan_layers``, ``layer_engine``) the engine entry point giving an
:class:`~fishersym.numeric.core.EngineOutput`.
"""
from .base import RULES, Factored, LayerRule, ProvedZero, dense, register, rule_for
from . import flatten, linear, elementwise, conv, pooling, batchnorm, layernorm, embedding  # noqa: F401  (register the rules)
from .sequential import DEFAULT_MAX_BYTES, ParamQuantities, SequentialPlan, layer_quantities, plan_sequential
from .graph import GraphPlan, plan_graph, run_graph

__all__ = ["RULES", "Factored", "LayerRule", "ProvedZero", "dense", "register", "rule_for", "ParamQuantities",
           "SequentialPlan", "layer_quantities", "plan_sequential", "DEFAULT_MAX_BYTES", "GraphPlan", "plan_graph",
           "run_graph"]
