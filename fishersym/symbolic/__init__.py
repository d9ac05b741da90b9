"""Symbolic engine: small MLPs in SymPy, their Fisher diagonal, V₁, V₂, bounds and LaTeX.

THEORY §1–§7.  Typical use::

    from fishersym import symbolic, families
    net = symbolic.mlp([2, 2, 1], "tanh")
    D = symbolic.derive(net, families.get("bernoulli"), n_samples=1)
    D["W1_1_1"].fisher            # I(θ|x) as a SymPy expression
    D.evaluate(model, x)          # same mappings as fishersym.numeric.conditional_stats
    D.to_latex("derivation.tex")  # standalone step-by-step document

The variances of the batched and Hutchinson estimators and their SymPy proofs (THEORY §13) are in
:mod:`fishersym.symbolic.estimators`.
"""
from . import estimators
from .activations import ACTIVATIONS, Activation, available as available_activations, get_activation
from .derive import Derivation, ParamDerivation, SizeError, derive
from .network import Network, ParamEntry, mlp

__all__ = ["estimators", "mlp", "derive", "Network", "ParamEntry", "Derivation", "ParamDerivation", "SizeError",
           "Activation", "ACTIVATIONS", "get_activation", "available_activations"]
