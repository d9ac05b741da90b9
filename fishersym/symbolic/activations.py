"""Activations for the symbolic engine (THEORY.md §6.1, §6.3, §7).

Each activation φ is given three times, consistently:

* ``fn(z)``: the SymPy expression φ(z) that *defines* the activation
  a = φ(z) (used to build the fully expanded network, which the tests
  differentiate directly);
* ``d1(z, a)``, ``d2(z, a)``: φ'(z) and φ''(z) written, for readability,
  through the intermediate symbols z (pre-activation) and a = φ(z)
  (activation) where that is shorter — σ' = σ(1 − σ) for the sigmoid,
  tanh' = 1 − tanh², softplus' = 1 − e^{−a};
* ``torch_module()``: the equivalent ``torch.nn`` module, so that a symbolic
  network maps one-to-one onto ``nn.Sequential(Linear, act, Linear, …)``.

Piecewise-linear activations (ReLU, leaky ReLU, identity) are
differentiable except on a null set (z = 0).  We use the derivative torch's
autograd uses — ReLU'(z) = H(z) with H(0) = 0, leaky ReLU'(z) = 1 for
z > 0 and α otherwise — and the second derivative **0**, which is its value
almost everywhere (THEORY §6.3: V₂ ≡ 0 a.e. for piecewise-linear networks).
The derivative of the step at z = 0 is a Dirac mass; it is deliberately not
represented, because the estimators only see the a.e. derivatives.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import sympy as sp
import torch.nn as nn

__all__ = ["Activation", "ACTIVATIONS", "available", "get_activation"]


def _logistic(z):
    return 1 / (1 + sp.exp(-z))


def _phi(z):  # standard normal density
    return sp.exp(-z ** 2 / 2) / sp.sqrt(2 * sp.pi)


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


def _leaky(slope: float = 0.01) -> Activation:
    if not isinstance(slope, (int, float)) or not (0 <= slope):
        raise ValueError(f"leaky_relu: negative_slope must be a number >= 0, got {slope!r}")
    s = sp.nsimplify(slope)
    return Activation(
        "leaky_relu", r"\operatorname{LeakyReLU}",
        fn=lambda z: sp.Piecewise((z, z > 0), (s * z, True)),
        d1=lambda z, a: sp.Piecewise((1, z > 0), (s, True)),
        d2=lambda z, a: sp.Integer(0),
        torch_module=lambda: nn.LeakyReLU(float(slope)),
        piecewise_linear=True, params=(float(slope),),
        note=(rf"leaky ReLU with slope $\alpha = {sp.latex(s)}$: $\phi'(z) = 1$ for $z > 0$, $\alpha$ otherwise "
              r"(autograd's convention at $z = 0$), and $\phi'' = 0$ almost everywhere."))


def _builtin() -> dict[str, Callable[..., Activation]]:
    return {
        "sigmoid": lambda: Activation(
            "sigmoid", r"\operatorname{sigmoid}", fn=_logistic,
            d1=lambda z, a: a * (1 - a), d2=lambda z, a: a * (1 - a) * (1 - 2 * a),
            torch_module=nn.Sigmoid, assumptions={"positive": True},
            note=r"sigmoid $\phi(z) = 1/(1+e^{-z})$: $\phi' = \phi(1-\phi)$, $\phi'' = \phi(1-\phi)(1-2\phi)$."),
        "tanh": lambda: Activation(
            "tanh", r"\tanh", fn=sp.tanh,
            d1=lambda z, a: 1 - a ** 2, d2=lambda z, a: -2 * a * (1 - a ** 2),
            torch_module=nn.Tanh,
            note=r"$\tanh$: $\phi' = 1 - \phi^2$, $\phi'' = -2\phi(1-\phi^2)$."),
        "softplus": lambda: Activation(
            "softplus", r"\operatorname{softplus}", fn=lambda z: sp.log(1 + sp.exp(z)),
            d1=lambda z, a: 1 - sp.exp(-a), d2=lambda z, a: sp.exp(-a) * (1 - sp.exp(-a)),
            torch_module=nn.Softplus, assumptions={"positive": True},
            note=(r"softplus $\phi(z) = \log(1+e^{z})$: $\phi' = \operatorname{sigmoid}(z) = 1 - e^{-\phi}$, "
                  r"$\phi'' = e^{-\phi}(1 - e^{-\phi})$.")),
        "relu": lambda: Activation(
            "relu", r"\operatorname{ReLU}", fn=lambda z: sp.Piecewise((z, z > 0), (0, True)),
            d1=lambda z, a: sp.Heaviside(z, 0), d2=lambda z, a: sp.Integer(0),
            torch_module=nn.ReLU, assumptions={"nonnegative": True}, piecewise_linear=True,
            note=(r"ReLU $\phi(z) = \max(0, z)$: $\phi'(z) = \theta(z)$ (Heaviside step, $\theta(0) = 0$ as in "
                  r"autograd) and $\phi'' = 0$ almost everywhere (the Dirac mass at $z = 0$ is a null set).")),
        "leaky_relu": _leaky,
        "identity": lambda: Activation(
            "identity", r"\operatorname{id}", fn=lambda z: z,
            d1=lambda z, a: sp.Integer(1), d2=lambda z, a: sp.Integer(0),
            torch_module=nn.Identity, piecewise_linear=True,
            note=r"identity: $\phi' = 1$, $\phi'' = 0$."),
        "gelu": lambda: Activation(
            "gelu", r"\operatorname{GELU}",
            fn=lambda z: z * (1 + sp.erf(z / sp.sqrt(2))) / 2,
            d1=lambda z, a: (1 + sp.erf(z / sp.sqrt(2))) / 2 + z * _phi(z),
            d2=lambda z, a: (2 - z ** 2) * _phi(z),
            torch_module=nn.GELU,
            note=(r"GELU $\phi(z) = z\,\Phi(z)$ with $\Phi(z) = \tfrac12(1 + \operatorname{erf}(z/\sqrt2))$: "
                  r"$\phi' = \Phi(z) + z\varphi(z)$, $\phi'' = (2 - z^2)\varphi(z)$, $\varphi$ the normal density.")),
        "silu": lambda: Activation(
            "silu", r"\operatorname{SiLU}", fn=lambda z: z * _logistic(z),
            d1=lambda z, a: _logistic(z) * (1 + z * (1 - _logistic(z))),
            d2=lambda z, a: _logistic(z) * (1 - _logistic(z)) * (2 + z * (1 - 2 * _logistic(z))),
            torch_module=nn.SiLU,
            note=(r"SiLU $\phi(z) = z\,s(z)$, $s$ the sigmoid: $\phi' = s(1 + z(1-s))$, "
                  r"$\phi'' = s(1-s)(2 + z(1-2s))$.")),
    }


ACTIVATIONS = _builtin()
_ALIASES = {"leakyrelu": "leaky_relu", "leaky-relu": "leaky_relu", "linear": "identity", "swish": "silu",
            "logistic": "sigmoid"}


def available() -> list[str]:
    """Names accepted by :func:`get_activation`."""
    return sorted(ACTIVATIONS)


def get_activation(spec) -> Activation:
    """An :class:`Activation` from a name (``"tanh"``), ``"leaky_relu:0.2"``, a tuple
    ``("leaky_relu", 0.2)`` or an instance."""
    if isinstance(spec, Activation):
        return spec
    args: tuple = ()
    if isinstance(spec, tuple) and spec and isinstance(spec[0], str):
        spec, args = spec[0], tuple(spec[1:])
    if isinstance(spec, str) and ":" in spec:
        spec, arg = spec.split(":", 1)
        try:
            args = (float(arg),)
        except ValueError:
            raise ValueError(f"invalid activation parameter {arg!r} in {spec!r}") from None
    if not isinstance(spec, str):
        raise ValueError(f"unknown activation {spec!r}; known: {', '.join(available())}")
    key = _ALIASES.get(spec.lower(), spec.lower())
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {spec!r}; known: {', '.join(available())}")
    try:
        return ACTIVATIONS[key](*args)
    except TypeError:
        raise ValueError(f"activation {key!r} takes no parameter, got {args}") from None
