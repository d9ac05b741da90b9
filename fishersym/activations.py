"""The activation registry: one entry per elementwise activation, read by every part of the package.

THEORY §7 (the fast MLP engine needs σ, σ′, σ″ at each pre-activation), §12 (the per-layer
engine's elementwise rule) and §6.1/§6.3 (the symbolic engine's φ; σ″ ≡ 0 a.e. for
piecewise-linear activations, hence V₂ ≡ 0).  Each :class:`ActivationSpec` holds

* ``name`` (the constructor name used by the hypothesis strategies, the experiments, the CLI
  and ``fishersym.symbolic.get_activation``) and its ``aliases``;
* ``module_types``: the torch module type(s) computing it (the first is the one built by
  :meth:`ActivationSpec.make`), and ``eval_types``: types that compute it in eval mode only
  (``nn.Dropout`` is the identity there; the planners check the mode);
* ``hyper``: the module hyper-parameters, each read as the attribute of the same name as the
  torch constructor keyword (``LeakyReLU.negative_slope``, ``ELU.alpha``, ``Hardtanh.min_val``/
  ``max_val``, ``Softplus.beta``/``threshold``, ``GELU.approximate``) with its default and check;
* ``numeric(m, z) -> (σ(z), σ′(z), σ″(z))`` in torch, cancellation-free (issue 13 item 16),
  with torch autograd's conventions at the kinks (ReLU′(0) = 0, LeakyReLU′(0) = slope,
  Hardtanh′ = 0 at the clip points, ELU″(0) = 0), so the fast, per-layer and generic paths
  agree exactly;
* ``phi(z, **params)``: the SymPy expression φ(z) defining it (``Piecewise`` for the kinked
  ones), and optionally ``d1(z, a, **params)``, ``d2(z, a, **params)``: φ′, φ″ written through
  z and the activation symbol a = φ(z) where that is shorter (σ′ = σ(1 − σ)); by default the
  derivatives are SymPy's ``diff`` of φ;
* ``piecewise_linear``: φ″ = 0 almost everywhere (THEORY §6.3); ``kinks(**params)``: the
  points where σ′ or σ″ jumps (where autograd's one-sided conventions apply);
* ``latex``, ``note`` (one sentence for the derivation's LaTeX) and the SymPy ``assumptions``
  on the activation symbol;
* ``sympy_refuses(**params)``: why φ is not the module's function for these hyper-parameters
  (Softplus with a threshold below 20), so that the symbolic engine refuses them;
* ``example``: the hyper-parameters the hypothesis strategies build (e.g. a leaky slope 0.1,
  so that the slope is visible in the statistics).

Adding an activation is one entry of :data:`REGISTRY`; ``tests/test_activation_registry.py``
checks every entry (σ′, σ″ against autograd, φ against the module's forward, φ′, φ″ against
σ′, σ″, the piecewise-linear flag against σ″) and that the numeric, symbolic and testing
sides all reach it.

>>> spec = get("leaky_relu")
>>> m = spec.make(negative_slope=0.2); type(m).__name__, spec.params_of(m)
('LeakyReLU', {'negative_slope': 0.2})
>>> lookup(nn.Tanh()).name, lookup(nn.Conv2d(1, 1, 1)) is None
('tanh', True)
>>> import sympy as sp; z = sp.Symbol("z", real=True)
>>> get("hardtanh").phi(z, min_val=-1, max_val=1)
Piecewise((-1, z < -1), (1, z > 1), (z, True))
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sympy as sp
import torch
from torch import nn

__all__ = ["Hyper", "ActivationSpec", "REGISTRY", "TYPES", "names", "smooth_names", "piecewise_linear_names",
           "get", "lookup", "module_spec", "constructors", "Triple"]

Triple = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


# ---------------------------------------------------------------------------- numeric σ, σ′, σ″
def _sigmoid_d(z: torch.Tensor) -> Triple:
    """σ, σ' = σ(z)σ(−z), σ'' = σ'·(1 − 2σ) = −σ'·tanh(z/2): no 1 − σ(z), which rounds to 0 for
    z ≳ 17 (float32) / 37 (float64) and loses digits from |z| ≈ 1 on (issue 13 item 16)."""
    s = torch.sigmoid(z)
    d1 = s * torch.sigmoid(-z)
    return s, d1, -d1 * torch.tanh(0.5 * z)


def _sech2(z: torch.Tensor) -> torch.Tensor:
    """1/cosh²(z) = 1 − tanh²(z) without the cancellation (relative error a few ulps)."""
    r = 1.0 / torch.cosh(z)                    # (1/c)² rather than 1/c²: c² overflows first
    return r * r


def _sigmoid(m, z):
    return _sigmoid_d(z)


def _tanh(m, z):
    t = torch.tanh(z)
    d1 = _sech2(z)
    return t, d1, -2 * t * d1


def _relu(m, z):
    pos = (z > 0).to(z.dtype)
    return torch.relu(z), pos, torch.zeros_like(z)


def _leaky(m, z):
    s = m.negative_slope
    d1 = torch.where(z > 0, torch.ones_like(z), torch.full_like(z, s))
    return torch.nn.functional.leaky_relu(z, s), d1, torch.zeros_like(z)


def _hardtanh(m, z):
    inside = ((z > m.min_val) & (z < m.max_val)).to(z.dtype)
    return torch.clamp(z, m.min_val, m.max_val), inside, torch.zeros_like(z)


def _elu(m, z):
    # σ'' jumps at z = 0 (α on the left, 0 on the right); torch's autograd (forward and
    # reverse, hence the generic path and the label-space oracle) takes σ''(0) = 0.
    # α(e^z − 1) as α·expm1(z): no cancellation for small negative z.
    al = m.alpha
    zn = torch.clamp(z, max=0)
    ez = al * torch.exp(zn)
    pos = z > 0
    return (torch.where(pos, z, al * torch.expm1(zn)), torch.where(pos, torch.ones_like(z), ez),
            torch.where(z >= 0, torch.zeros_like(z), ez))


def _softplus(m, z):
    # torch's Softplus is linear where βz > threshold (its autograd: σ' = 1, σ'' = 0 there);
    # at βz = threshold exactly torch's first derivative is the sigmoid's but its double
    # backward (and forward-over-forward) already gives σ'' = 0: the same here
    beta, thr = m.beta, m.threshold
    bz = beta * z
    s, d1, d2 = _sigmoid_d(bz)
    return (torch.nn.functional.softplus(z, beta, thr), torch.where(bz > thr, torch.ones_like(z), s),
            torch.where(bz >= thr, torch.zeros_like(z), beta * d1))


_GELU_K, _GELU_C = math.sqrt(2 / math.pi), 0.044715


def _gelu(m, z):
    if m.approximate == "tanh":
        # 0.5(1 + tanh u) = σ(2u) and sech²u without cancellation (u → −∞ and u → +∞)
        k, c = _GELU_K, _GELU_C
        u = k * (z + c * z ** 3)
        u1, u2 = k * (1 + 3 * c * z * z), 6 * k * c * z
        t = torch.tanh(u)
        half = torch.sigmoid(2 * u)
        sech2 = _sech2(u)
        return (z * half, half + 0.5 * z * sech2 * u1,
                sech2 * u1 + 0.5 * z * sech2 * (u2 - 2 * t * u1 * u1))
    # Φ(z) = erfc(−z/√2)/2: no 1 + erf(z/√2) cancellation for z → −∞
    phi = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    Phi = 0.5 * torch.erfc(-z / math.sqrt(2))
    return z * Phi, Phi + z * phi, phi * (2 - z * z)


def _silu(m, z):
    # σ' = σ(z)σ(−z), 1 − 2σ = −tanh(z/2) (see _sigmoid_d)
    s, d, _ = _sigmoid_d(z)
    return z * s, s + z * d, d * (2 - z * torch.tanh(0.5 * z))


def _identity(m, z):
    return z, torch.ones_like(z), torch.zeros_like(z)


# ---------------------------------------------------------------------------- SymPy φ
def _logistic(z):
    return 1 / (1 + sp.exp(-z))


def _normal_density(z):
    return sp.exp(-z ** 2 / 2) / sp.sqrt(2 * sp.pi)


_K, _C = sp.sqrt(2 / sp.pi), sp.Rational(44715, 10 ** 6)   # GELU's tanh approximation (torch's constants)


def _gelu_phi(z, approximate="none"):
    if approximate == "tanh":
        return z * (1 + sp.tanh(_K * (z + _C * z ** 3))) / 2
    return z * (1 + sp.erf(z / sp.sqrt(2))) / 2


def _gelu_d1(z, a, approximate="none"):
    if approximate == "tanh":
        return sp.diff(_gelu_phi(z, "tanh"), z)
    return (1 + sp.erf(z / sp.sqrt(2))) / 2 + z * _normal_density(z)


def _gelu_d2(z, a, approximate="none"):
    if approximate == "tanh":
        return sp.diff(_gelu_phi(z, "tanh"), z, 2)
    return (2 - z ** 2) * _normal_density(z)


def _gelu_note(approximate="none"):
    if approximate == "tanh":
        return (r"GELU, tanh approximation "
                r"$\phi(z) = \tfrac z2\bigl(1 + \tanh(\sqrt{2/\pi}\,(z + 0.044715 z^3))\bigr)$ "
                r"(torch's \texttt{approximate='tanh'}); $\phi'$, $\phi''$ by differentiation.")
    return (r"GELU $\phi(z) = z\,\Phi(z)$ with $\Phi(z) = \tfrac12(1 + \operatorname{erf}(z/\sqrt2))$: "
            r"$\phi' = \Phi(z) + z\varphi(z)$, $\phi'' = (2 - z^2)\varphi(z)$, $\varphi$ the normal density.")


def _softplus_note(beta, threshold):
    if beta == 1:
        text = (r"softplus $\phi(z) = \log(1+e^{z})$: $\phi' = \operatorname{sigmoid}(z) = 1 - e^{-\phi}$, "
                r"$\phi'' = e^{-\phi}(1 - e^{-\phi})$.")
    else:
        text = (rf"softplus $\phi(z) = \log(1+e^{{\beta z}})/\beta$, $\beta = {sp.latex(beta)}$: "
                r"$\phi' = \operatorname{sigmoid}(\beta z) = 1 - e^{-\beta\phi}$, "
                r"$\phi'' = \beta e^{-\beta\phi}(1 - e^{-\beta\phi})$.")
    if threshold != 20:           # torch's default (20) is stated once in fishersym.symbolic.activations
        text += (rf" (torch's module returns $z$ where ${sp.latex(beta * sp.Symbol('z'))} > {sp.latex(threshold)}$, "
                 rf"less than $e^{{-{sp.latex(threshold)}}}" + ("" if beta == 1 else f"/{sp.latex(beta)}")
                 + r"$ from $\phi$.)")
    return text


# ---------------------------------------------------------------------------- the registry
def _number(v: Any) -> str | None:
    return None if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else "a finite number"


def _nonneg(v: Any) -> str | None:
    return _number(v) or (None if v >= 0 else "a number >= 0")


def _positive(v: Any) -> str | None:
    return _number(v) or (None if v > 0 else "a number > 0")


@dataclass(frozen=True)
class Hyper:
    """A module hyper-parameter: the torch constructor keyword, which is also the module
    attribute it is read from (``getattr(module, name)``), its default and a check returning
    what a valid value is (None when valid)."""

    name: str
    default: Any
    check: Callable[[Any], str | None] = _number

    def validate(self, activation: str, v: Any) -> Any:
        """``v`` checked by :attr:`check` (an int becomes a float where the default is a float); a
        ValueError naming ``activation``, the hyper-parameter and the valid values otherwise."""
        if isinstance(self.default, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        want = self.check(v)
        if want is not None:
            raise ValueError(f"{activation}: {self.name} must be {want}, got {v!r}")
        return v


@dataclass(frozen=True)
class ActivationSpec:
    """One elementwise activation (see the module docstring for the fields)."""

    name: str
    module_types: tuple[type[nn.Module], ...]
    numeric: Callable[[Any, torch.Tensor], Triple]
    phi: Callable[..., sp.Expr]
    piecewise_linear: bool
    latex: str
    hyper: tuple[Hyper, ...] = ()
    d1: Callable[..., sp.Expr] | None = None
    d2: Callable[..., sp.Expr] | None = None
    note: Callable[..., str] | str = ""
    assumptions: Mapping[str, bool] = field(default_factory=lambda: {"real": True})
    aliases: tuple[str, ...] = ()
    eval_types: tuple[type[nn.Module], ...] = ()
    example: Mapping[str, Any] = field(default_factory=dict)
    #: kinks(**params): the points where σ′ or σ″ jumps (autograd's one-sided conventions apply there)
    kinks: Callable[..., tuple[float, ...]] = lambda **params: ()
    #: why φ is not the torch module's function for these hyper-parameters (None when it is, to
    #: rounding); the symbolic engine refuses such settings rather than derive for another function
    sympy_refuses: Callable[..., str | None] | None = None
    #: a joint check of the hyper-parameters (what is wrong, or None), e.g. Hardtanh's min < max
    consistent: Callable[..., str | None] | None = None

    def __repr__(self) -> str:
        return f"ActivationSpec({self.name!r}, {', '.join(t.__name__ for t in self.all_types)})"

    # -- hyper-parameters
    def params(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The full, validated hyper-parameter dict from positional (in :attr:`hyper` order)
        and keyword values; missing ones take their defaults.  Raises ValueError naming the
        activation's parameters."""
        known = [h.name for h in self.hyper]
        if len(args) > len(known):
            raise ValueError(f"activation {self.name!r} takes {len(known) or 'no'} parameter(s)"
                             f"{' (' + ', '.join(known) + ')' if known else ''}, got {args}")
        vals = dict(zip(known, args))
        for k, v in kwargs.items():
            if k not in known:
                raise ValueError(f"activation {self.name!r} has no parameter {k!r}; "
                                 f"its parameters: {', '.join(known) or 'none'}")
            if k in vals:
                raise ValueError(f"activation {self.name!r}: {k} given twice")
            vals[k] = v
        out = {h.name: h.validate(self.name, vals.get(h.name, h.default)) for h in self.hyper}
        bad = self.consistent(**out) if self.consistent is not None else None
        if bad is not None:
            raise ValueError(f"{self.name}: {bad}")
        return out

    def params_of(self, module: nn.Module) -> dict[str, Any]:
        """The hyper-parameters of a module of this activation (read as attributes)."""
        return {h.name: getattr(module, h.name) for h in self.hyper}

    def make(self, *args: Any, **kwargs: Any) -> nn.Module:
        """The torch module (``module_types[0]``) with these hyper-parameters."""
        return self.module_types[0](**self.params(*args, **kwargs))

    def make_example(self) -> nn.Module:
        """The module the hypothesis strategies build (:attr:`example` hyper-parameters)."""
        return self.make(**self.example)

    # -- numeric
    def derivs(self, module: nn.Module, z: torch.Tensor) -> Triple:
        """(σ(z), σ′(z), σ″(z)) of ``module`` (its hyper-parameters) at z."""
        return self.numeric(module, z)

    # -- symbolic
    def sympy_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Numbers as exact SymPy rationals (``0.1`` → 1/10), strings unchanged."""
        return {k: (sp.nsimplify(v, rational=True) if isinstance(v, (int, float)) else v) for k, v in params.items()}

    def sympy_d1(self, z: sp.Expr, a: sp.Expr, **params: Any) -> sp.Expr:
        """φ′ (the entry's a-form, else SymPy's derivative of φ)."""
        return self.d1(z, a, **params) if self.d1 is not None else sp.diff(self.phi(z, **params), z)

    def sympy_d2(self, z: sp.Expr, a: sp.Expr, **params: Any) -> sp.Expr:
        """φ″ (the entry's a-form, else SymPy's second derivative of φ)."""
        return self.d2(z, a, **params) if self.d2 is not None else sp.diff(self.phi(z, **params), z, 2)

    def describe(self, **params: Any) -> str:
        """The LaTeX sentence of the derivation document."""
        if callable(self.note):
            return self.note(**params)
        if self.note:
            return self.note
        z = sp.Symbol("z", real=True)
        return rf"${self.latex}$: $\phi(z) = {sp.latex(self.phi(z, **params))}$."

    @property
    def all_types(self) -> tuple[type[nn.Module], ...]:
        """Every module type computing the activation: :attr:`module_types` then :attr:`eval_types`."""
        return self.module_types + self.eval_types


#: name → entry.  The order is the strategies' draw order (hypothesis shrinks towards the first):
#: append new entries at the end so that derandomised property tests keep their examples.
REGISTRY: dict[str, ActivationSpec] = {s.name: s for s in [
    ActivationSpec("sigmoid", (nn.Sigmoid,), _sigmoid, _logistic, False, r"\operatorname{sigmoid}",
                   d1=lambda z, a: a * (1 - a), d2=lambda z, a: a * (1 - a) * (1 - 2 * a),
                   assumptions={"positive": True}, aliases=("logistic",),
                   note=r"sigmoid $\phi(z) = 1/(1+e^{-z})$: $\phi' = \phi(1-\phi)$, $\phi'' = \phi(1-\phi)(1-2\phi)$."),
    ActivationSpec("tanh", (nn.Tanh,), _tanh, sp.tanh, False, r"\tanh",
                   d1=lambda z, a: 1 - a ** 2, d2=lambda z, a: -2 * a * (1 - a ** 2),
                   note=r"$\tanh$: $\phi' = 1 - \phi^2$, $\phi'' = -2\phi(1-\phi^2)$."),
    ActivationSpec("relu", (nn.ReLU,), _relu, lambda z: sp.Piecewise((z, z > 0), (0, True)), True,
                   r"\operatorname{ReLU}",
                   d1=lambda z, a: sp.Heaviside(z, 0), d2=lambda z, a: sp.Integer(0),
                   assumptions={"nonnegative": True}, kinks=lambda: (0.0,),
                   note=(r"ReLU $\phi(z) = \max(0, z)$: $\phi'(z) = \theta(z)$ (Heaviside step, $\theta(0) = 0$ as in "
                         r"autograd) and $\phi'' = 0$ almost everywhere (the Dirac mass at $z = 0$ is a null set).")),
    ActivationSpec("leaky_relu", (nn.LeakyReLU,), _leaky,
                   lambda z, negative_slope: sp.Piecewise((z, z > 0), (negative_slope * z, True)), True,
                   r"\operatorname{LeakyReLU}", hyper=(Hyper("negative_slope", 0.01, _nonneg),),
                   d1=lambda z, a, negative_slope: sp.Piecewise((1, z > 0), (negative_slope, True)),
                   d2=lambda z, a, negative_slope: sp.Integer(0),
                   aliases=("leakyrelu", "leaky-relu"), example={"negative_slope": 0.1},
                   kinks=lambda negative_slope: (0.0,),
                   note=lambda negative_slope: (
                       rf"leaky ReLU with slope $\alpha = {sp.latex(negative_slope)}$: $\phi'(z) = 1$ for $z > 0$, "
                       r"$\alpha$ otherwise (autograd's convention at $z = 0$), and $\phi'' = 0$ almost everywhere.")),
    ActivationSpec("elu", (nn.ELU,), _elu,
                   lambda z, alpha: sp.Piecewise((z, z > 0), (alpha * (sp.exp(z) - 1), True)), False,
                   r"\operatorname{ELU}", hyper=(Hyper("alpha", 1.0),),
                   d1=lambda z, a, alpha: sp.Piecewise((1, z > 0), (alpha * sp.exp(z), True)),
                   d2=lambda z, a, alpha: sp.Piecewise((0, z >= 0), (alpha * sp.exp(z), True)),
                   kinks=lambda alpha: (0.0,),
                   note=lambda alpha: (
                       rf"ELU with $\alpha = {sp.latex(alpha)}$: $\phi(z) = z$ for $z > 0$, "
                       r"$\alpha(e^z - 1)$ otherwise; $\phi' = 1$ resp.\ $\alpha e^z$, $\phi'' = 0$ resp.\ "
                       r"$\alpha e^z$ (autograd's $\phi''(0) = 0$).")),
    ActivationSpec("softplus", (nn.Softplus,), _softplus,
                   lambda z, beta, threshold: sp.log(1 + sp.exp(beta * z)) / beta, False, r"\operatorname{softplus}",
                   hyper=(Hyper("beta", 1.0, _positive), Hyper("threshold", 20.0, _positive)),
                   d1=lambda z, a, beta, threshold: 1 - sp.exp(-beta * a),
                   d2=lambda z, a, beta, threshold: beta * sp.exp(-beta * a) * (1 - sp.exp(-beta * a)),
                   assumptions={"positive": True}, kinks=lambda beta, threshold: (threshold / beta,),
                   sympy_refuses=lambda beta, threshold: None if threshold >= 20 else (
                       f"the symbolic softplus is log(1 + e^(βz))/β; torch's Softplus(threshold={threshold}) returns z "
                       f"where βz > {threshold}, up to e^-{threshold}/β = {math.exp(-threshold) / beta:.2g} away; "
                       "use threshold >= 20 (torch's default, within e^-20/β)"),
                   note=_softplus_note),
    ActivationSpec("gelu", (nn.GELU,), _gelu, _gelu_phi, False, r"\operatorname{GELU}",
                   hyper=(Hyper("approximate", "none",
                                lambda v: None if v in ("none", "tanh") else "'none' or 'tanh'"),),
                   d1=_gelu_d1, d2=_gelu_d2, note=_gelu_note),
    ActivationSpec("silu", (nn.SiLU,), _silu, lambda z: z * _logistic(z), False, r"\operatorname{SiLU}",
                   d1=lambda z, a: _logistic(z) * (1 + z * (1 - _logistic(z))),
                   d2=lambda z, a: _logistic(z) * (1 - _logistic(z)) * (2 + z * (1 - 2 * _logistic(z))),
                   aliases=("swish",),
                   note=(r"SiLU $\phi(z) = z\,s(z)$, $s$ the sigmoid: $\phi' = s(1 + z(1-s))$, "
                         r"$\phi'' = s(1-s)(2 + z(1-2s))$.")),
    ActivationSpec("identity", (nn.Identity,), _identity, lambda z: z, True, r"\operatorname{id}",
                   d1=lambda z, a: sp.Integer(1), d2=lambda z, a: sp.Integer(0),
                   aliases=("linear",), eval_types=(nn.Dropout,),       # Dropout: the identity in eval mode only
                   note=r"identity: $\phi' = 1$, $\phi'' = 0$."),
    ActivationSpec("hardtanh", (nn.Hardtanh,), _hardtanh,
                   lambda z, min_val, max_val: sp.Piecewise((min_val, z < min_val), (max_val, z > max_val), (z, True)),
                   True, r"\operatorname{Hardtanh}", hyper=(Hyper("min_val", -1.0), Hyper("max_val", 1.0)),
                   d1=lambda z, a, min_val, max_val: sp.Piecewise((1, (z > min_val) & (z < max_val)), (0, True)),
                   d2=lambda z, a, min_val, max_val: sp.Integer(0), kinks=lambda min_val, max_val: (min_val, max_val),
                   consistent=lambda min_val, max_val: (None if min_val < max_val else
                                                        f"min_val must be < max_val, got {min_val}, {max_val}"),
                   note=lambda min_val, max_val: (
                       rf"Hardtanh $\phi(z) = \min(\max(z, {sp.latex(min_val)}), {sp.latex(max_val)})$: "
                       r"$\phi' = 1$ strictly inside the interval and 0 outside and at its ends (autograd's "
                       r"convention), $\phi'' = 0$ almost everywhere.")),
]}

#: torch module type → entry (exact types: a subclass may override forward)
TYPES: dict[type[nn.Module], ActivationSpec] = {t: s for s in REGISTRY.values() for t in s.all_types}
_ALIASES: dict[str, str] = {a: s.name for s in REGISTRY.values() for a in s.aliases}


def _check_registry() -> None:
    """Import-time consistency: unique types and names, hyper-parameters readable from the module."""
    all_types = [t for s in REGISTRY.values() for t in s.all_types]
    if len(all_types) != len(set(all_types)):
        raise RuntimeError("activation registry: a torch module type is listed under two entries")
    clash = set(_ALIASES) & set(REGISTRY)
    if clash or len(_ALIASES) != sum(len(s.aliases) for s in REGISTRY.values()):
        raise RuntimeError(f"activation registry: an alias clashes with a name or another alias ({clash})")


_check_registry()


def names() -> list[str]:
    """Every constructor name, in registry order."""
    return list(REGISTRY)


def smooth_names() -> tuple[str, ...]:
    """Activations with σ″ ≠ 0 somewhere (V₂ > 0 in hidden layers in general, THEORY §6.3)."""
    return tuple(n for n, s in REGISTRY.items() if not s.piecewise_linear)


def piecewise_linear_names() -> tuple[str, ...]:
    """Piecewise-linear activations: every diagonal second derivative vanishes a.e. (THEORY §6.3)."""
    return tuple(n for n, s in REGISTRY.items() if s.piecewise_linear)


def get(name: str) -> ActivationSpec:
    """The entry for a constructor name or alias (case-insensitive); ValueError listing the names."""
    if isinstance(name, ActivationSpec):
        return name
    if not isinstance(name, str):
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(sorted(REGISTRY))}")
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in REGISTRY:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[key]


def lookup(module: nn.Module | type) -> ActivationSpec | None:
    """The entry whose module types include ``type(module)`` exactly (None otherwise)."""
    t = module if isinstance(module, type) else type(module)
    return TYPES.get(t)


def module_spec(module: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """(constructor name, hyper-parameters) of an activation module, None when it is not one.
    Modules of an entry's ``eval_types`` (Dropout) count only in eval mode."""
    s = lookup(module)
    if s is None or (type(module) in s.eval_types and module.training):
        return None
    return s.name, s.params_of(module)


def constructors(example: bool = False) -> dict[str, Callable[[], nn.Module]]:
    """name → zero-argument factory of the module (torch's defaults, or the strategies'
    :attr:`ActivationSpec.example` hyper-parameters with ``example=True``)."""
    if example:
        return {n: s.make_example for n, s in REGISTRY.items()}
    return {n: s.make for n, s in REGISTRY.items()}
