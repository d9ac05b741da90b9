"""Activations for the symbolic engine (THEORY §6.1, §6.3, §7).

The symbolic view of the activation registry :mod:`fishersym.activations` (one entry per
activation, shared with the numeric engines, the per-layer rules and the hypothesis
strategies).  Each activation φ is given three times, consistently:

* ``fn(z)``: the SymPy expression φ(z) that *defines* the activation
  a = φ(z) (used to build the fully expanded network, which the tests
  differentiate directly); ``Piecewise`` for the kinked ones (ReLU, leaky ReLU,
  ELU, Hardtanh);
* ``d1(z, a)``, ``d2(z, a)``: φ'(z) and φ''(z) written, for readability,
  through the intermediate symbols z (pre-activation) and a = φ(z)
  (activation) where that is shorter — σ' = σ(1 − σ) for the sigmoid,
  tanh' = 1 − tanh², softplus' = 1 − e^{−a};
* ``torch_module()``: the equivalent ``torch.nn`` module with the same
  hyper-parameters, so that a symbolic network maps one-to-one onto
  ``nn.Sequential(Linear, act, Linear, …)``.

Piecewise-linear activations (ReLU, leaky ReLU, Hardtanh, identity) are
differentiable except on a null set.  We use the derivative torch's
autograd uses — ReLU'(z) = H(z) with H(0) = 0, leaky ReLU'(z) = 1 for
z > 0 and α otherwise, Hardtanh' = 0 at the clip points — and the second
derivative **0**, which is its value almost everywhere (THEORY §6.3: V₂ ≡ 0
a.e. for piecewise-linear networks).  The derivative of a step is a Dirac
mass; it is deliberately not represented, because the estimators only see the
a.e. derivatives.  Softplus is the smooth log(1 + e^{βz})/β; torch's module
returns z where βz exceeds its ``threshold``, within e^{−threshold}/β of it, so
thresholds below torch's default 20 are refused.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import sympy as sp
import torch.nn as nn

from .. import activations as _registry
from ..activations import ActivationSpec

__all__ = ["Activation", "ACTIVATIONS", "available", "get_activation"]


@dataclass(frozen=True)
class Activation:
    """An elementwise activation φ with its derivatives (see module docstring)."""

    name: str
    latex: str
    fn: Callable[[sp.Expr], sp.Expr]
    d1: Callable[[sp.Expr, sp.Expr], sp.Expr]
    d2: Callable[[sp.Expr, sp.Expr], sp.Expr]
    torch_module: Callable[[], nn.Module]
    #: SymPy assumptions for the activation symbol a (e.g. positive for the sigmoid)
    assumptions: dict = field(default_factory=lambda: {"real": True})
    #: φ'' = 0 almost everywhere (THEORY §6.3)
    piecewise_linear: bool = False
    #: one sentence for the LaTeX document
    note: str = ""
    #: parameters that define the activation (e.g. the leaky slope), for repr and LaTeX
    params: tuple = ()

    def __repr__(self) -> str:
        extra = f", {self.params}" if self.params else ""
        return f"Activation({self.name!r}{extra})"


def _from_registry(spec: ActivationSpec, *args: Any, **kwargs: Any) -> Activation:
    """The :class:`Activation` of a registry entry with these hyper-parameters (positional in
    the entry's order, or by keyword; defaults: torch's)."""
    p = spec.params(*args, **kwargs)
    why = spec.sympy_refuses(**p) if spec.sympy_refuses is not None else None
    if why is not None:
        raise ValueError(f"{spec.name}: {why}")
    q = spec.sympy_params(p)
    return Activation(
        spec.name, spec.latex,
        fn=lambda z: spec.phi(z, **q),
        d1=lambda z, a: spec.sympy_d1(z, a, **q),
        d2=lambda z, a: spec.sympy_d2(z, a, **q),
        torch_module=lambda: spec.make(**p),
        assumptions=dict(spec.assumptions), piecewise_linear=spec.piecewise_linear,
        note=spec.describe(**q), params=tuple(p[h.name] for h in spec.hyper))


#: name → factory(*hyper-parameters) of the :class:`Activation`, one per registry entry
ACTIVATIONS: dict[str, Callable[..., Activation]] = {
    name: partial(_from_registry, spec) for name, spec in _registry.REGISTRY.items()}


def available() -> list[str]:
    """Names accepted by :func:`get_activation`."""
    return sorted(ACTIVATIONS)


def _parse_arg(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def get_activation(spec) -> Activation:
    """An :class:`Activation` from a name (``"tanh"``), ``"leaky_relu:0.2"``,
    ``"hardtanh:-0.5,0.7"``, ``"gelu:tanh"``, ``"softplus:beta=2"``, a tuple
    ``("leaky_relu", 0.2)`` or an instance.  Parameters are the torch module's
    hyper-parameters, positionally in the registry's order or by keyword."""
    if isinstance(spec, Activation):
        return spec
    args: tuple = ()
    kwargs: dict[str, Any] = {}
    if isinstance(spec, tuple) and spec and isinstance(spec[0], str):
        spec, args = spec[0], tuple(spec[1:])
    if isinstance(spec, str) and ":" in spec:
        spec, arg = spec.split(":", 1)
        pos = []
        for part in arg.split(","):
            if not part.strip():
                raise ValueError(f"invalid activation parameter {arg!r} in {spec!r}")
            if "=" in part:
                k, v = part.split("=", 1)
                kwargs[k.strip()] = _parse_arg(v.strip())
            elif kwargs:
                raise ValueError(f"invalid activation parameter {arg!r} in {spec!r}: positional after keyword")
            else:
                pos.append(_parse_arg(part.strip()))
        args = tuple(pos)
    entry = _registry.get(spec) if isinstance(spec, str) else None
    if entry is None:
        raise ValueError(f"unknown activation {spec!r}; known: {', '.join(available())}")
    return ACTIVATIONS[entry.name](*args, **kwargs)
