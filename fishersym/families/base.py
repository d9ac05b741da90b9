"""The exponential-family base class (THEORY §1, §3, §4).

A family is defined once by its log-partition F(h), written as a SymPy
expression (``log_partition_sym``).  Everything symbolic is *derived* from it:

    η = ∇F,  Σ = ∇²F,  κ₃ = ∇³F,  κ₄ = ∇⁴F,
    M₄_abcd = κ₄_abcd + Σ_ab Σ_cd + Σ_ac Σ_bd + Σ_ad Σ_bc      (fourth central moment, "K")
    M_abcd  = M₄_abcd − Σ_ab Σ_cd,   M̄ = mat(M₄) − vec(Σ) vec(Σ)ᵀ = Cov[vec(r rᵀ)].

The numeric (torch) side has its own, numerically stable F
(``log_partition``); by default every cumulant is obtained from it by
automatic differentiation (nested forward-mode directional derivatives for
κ₄(u,u,u,u), THEORY §3, never a C⁴ tensor).  Families override the
directional quantities with the closed forms of THEORY §4 where those are
cheaper; tests check closed forms, autodiff, the lambdified SymPy side and
brute-force moments (enumeration / quadrature) against one another.

Shapes: natural parameters ``h`` have shape ``(..., C)``; directions ``u``
have shape ``(..., C)`` or ``(..., K, C)`` (K directions per input), and the
directional quantities return the broadcast batch shape without the last axis.
"""
from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, ClassVar

import sympy as sp
import torch
from torch.func import hessian, jacfwd, jvp, vmap

from .links import Identity, Link

__all__ = ["ExponentialFamily", "Support", "batch_shape", "REGISTRY", "register", "unregister", "QUADRATURE_NODES"]

#: every family class by its registry name, filled by :meth:`ExponentialFamily.__init_subclass__`:
#: a subclass that sets its own ``name`` is registered when its class statement runs, in any module
#: (a user's file, a test), so ``fishersym.families.get(name)`` finds it (issue 11 item 4)
REGISTRY: dict[str, type[ExponentialFamily]] = {}

#: Gauss–Hermite / Gauss–Laguerre nodes of the continuous families' :meth:`ExponentialFamily.label_nodes`
#: (exact for polynomial moments of degree ≤ 23, far above the degree 4 that V₁ needs)
QUADRATURE_NODES = 12


def register(cls: type[ExponentialFamily]) -> type[ExponentialFamily]:
    """Register a family class under ``cls.name`` (what the class statement does by itself; for a class
    declared with ``register=False``).  The same class (same module and qualified name, e.g. a module
    reloaded) replaces its earlier definition; another class with a taken name raises a ValueError."""
    if not (isinstance(cls, type) and issubclass(cls, ExponentialFamily)):
        raise TypeError(f"register takes an ExponentialFamily subclass, got {cls!r}")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{cls.__qualname__}: a registered family needs its own `name`, a Python identifier "
                         f"(e.g. name = \"gamma\"), got {name!r}")
    old = REGISTRY.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"family name {name!r} is already registered by {old.__module__}.{old.__qualname__}; "
                         f"choose another name for {cls.__module__}.{cls.__qualname__} (or call "
                         "fishersym.families.unregister first)")
    REGISTRY[name] = cls
    return cls


def unregister(name: str) -> type[ExponentialFamily]:
    """Remove the family registered as ``name`` and return its class (a KeyError names the known ones)."""
    if name not in REGISTRY:
        raise KeyError(f"no family registered as {name!r}; registered: {', '.join(sorted(REGISTRY))}")
    return REGISTRY.pop(name)


_register = register


class Support:
    """An enumerated (possibly truncated) support: statistics ``t`` (S, C) and
    log-probabilities ``logp`` (..., S) for each input; ``tail`` bounds the
    probability mass left out by truncation (0 for finite supports)."""

    def __init__(self, t: torch.Tensor, logp: torch.Tensor, tail: float = 0.0):
        self.t, self.logp, self.tail = t, logp, tail

    @property
    def prob(self) -> torch.Tensor:
        """The probabilities exp(logp) (..., S) of the enumerated statistics."""
        return self.logp.exp()


def batch_shape(h: torch.Tensor, u: torch.Tensor) -> torch.Size:
    """Batch shape of a directional quantity for h (..., C) and u (..., C) or (..., K, C)."""
    hb = h.shape[:-1] if u.dim() == h.dim() else (*h.shape[:-1], 1)
    return torch.broadcast_shapes(hb, u.shape[:-1])


def _as_directions(h: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Broadcast h (..., C) against u (..., C) or (..., K, C)."""
    if u.dim() == h.dim() + 1:
        h = h.unsqueeze(-2)
    shape = torch.broadcast_shapes(h.shape, u.shape)
    return h.expand(shape).contiguous(), u.expand(shape).contiguous()


class ExponentialFamily:
    """p(y | h) = π(y) exp(t(y)ᵀh − F(h)) with h = link(o) (THEORY §1)."""

    #: registry name
    name: str = "family"
    #: True when t(y) takes countably many values (enumeration is exact)
    discrete: bool = False
    #: True when Σ𝟙 = 0 and everything is invariant to h ↦ h + c𝟙 (softmax; THEORY §5, §6.6)
    shift_invariant: bool = False

    # ------------------------------------------------------------------ derived documents (symbolic/latex.py)
    #: True when the display coordinates are probabilities (p_a = η_a): documents print 1 − p where SymPy
    #: would write −p + 1
    display_probabilities: bool = False

    def latex_constants_note(self) -> str:
        """LaTeX appended to a derived document's "Constants of Theorem 4.1" paragraph when the constants
        are kept as named constants (no closed form): what is known about them ("" for nothing)."""
        return ""

    def latex_conclusions(self) -> list[str]:
        r"""Extra ``\item`` lines (LaTeX) for the conclusions of a derived document whose V₂ does not
        vanish everywhere (e.g. where V₁ vanishes)."""
        return []

    # ------------------------------------------------------------------ registration (issue 11 item 4)
    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        """Register every subclass that sets its own ``name`` (``class Gamma(ExponentialFamily): name =
        "gamma"``) in :data:`REGISTRY`, so that ``families.get("gamma", **params)`` builds it; a
        subclass that inherits its parent's name (a variant) is not registered.  ``register=False`` in
        the class statement opts out (register later with :func:`register`)."""
        super().__init_subclass__(**kwargs)
        if register and "name" in cls.__dict__:
            _register(cls)

    # ------------------------------------------------------------------ family hooks (issue 11 item 4)
    # What the rest of the package asks a family, so that adding a family is one file.  Every default
    # works for any family defined by its log-partition; families override where they have more.

    #: parameters of the family's example instance (the CLI's ``fishersym families`` table, the demo,
    #: the default :meth:`param_strategy`); ``{}``: the constructor's defaults
    example_params: ClassVar[dict[str, Any]] = {}

    #: largest |raw output| the reliability fuzzing drives this family to (testing.strategies): a
    #: moderate 5 unless the family is known to stay accurate when saturated
    fuzz_output_cap: ClassVar[float] = 5.0

    @classmethod
    def summary(cls) -> str:
        """One line describing the family for the CLI (``fishersym families``, ``--family`` help):
        the first line of the class's docstring, else of its module's, else its name."""
        for doc in (cls.__dict__.get("__doc__"), inspect.getmodule(cls).__doc__ if inspect.getmodule(cls) else None):
            if doc and doc.strip():
                return doc.strip().splitlines()[0].strip()
        return cls.name

    @classmethod
    def param_strategy(cls, max_classes: int = 5):
        """A hypothesis strategy of valid constructor parameters (dicts) for the property suite
        (``fishersym.testing.strategies.family_specs``).  Default: the example parameters only
        (:attr:`example_params`); families with free parameters override it."""
        from hypothesis import strategies as st
        return st.just(dict(cls.example_params))

    @classmethod
    def fuzz_param_strategy(cls, max_classes: int = 6):
        """A hypothesis strategy of constructor parameters for the reliability fuzzing
        (``fishersym.testing.strategies.fuzz_family_specs``): wider than :meth:`param_strategy` where a
        family has continuous parameters.  Default: :meth:`param_strategy`."""
        return cls.param_strategy(max_classes)

    def sample_point(self, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """A deterministic natural parameter h (C,) inside the family's domain (the CLI's numeric
        example, tests).  Default: standard normal entries (the domain is all of ℝ^C, THEORY §1);
        families with a restricted domain (:meth:`_check_domain`) override it."""
        g = torch.Generator().manual_seed(seed)
        return self.check_h(torch.randn(self.C, generator=g, dtype=dtype))

    def label_nodes(self, h1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The label distribution p(y|h) of one input h1 (C,) as statistics t (S, C) and weights
        (S,) summing to 1, for the label-space oracle (``fishersym.testing.brute``, THEORY §2–§3).

        Default for discrete families: the enumerated support (:meth:`support`, truncated at mass
        ≤ 1e-15 where infinite), zero-probability labels dropped.  Continuous families override it with
        a quadrature rule exact for polynomial moments of t up to degree ≥ 8 (V₁ is degree 4 in t);
        without one a TypeError names the fix."""
        if self.discrete:
            sup = self.support(h1.unsqueeze(0))
            w = sup.prob[0]
            keep = w > 0
            return sup.t[keep], w[keep]
        raise TypeError(f"{self.name} is continuous and defines no label_nodes: give the family a label_nodes "
                        "method returning quadrature nodes t (S, C) and weights (S,) of p(y|h) (e.g. Gauss–Hermite "
                        "or Gauss–Laguerre), exact for polynomial moments of t up to degree 8")

    @staticmethod
    def _gauss_hermite(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilists' Gauss–Hermite nodes z and weights (summing to 1) for z ~ N(0, 1)."""
        import numpy as np
        z, wz = np.polynomial.hermite_e.hermegauss(QUADRATURE_NODES)
        return torch.tensor(z, dtype=dtype), torch.tensor(wz / wz.sum(), dtype=dtype)

    def symbolic_theorems(self) -> dict[str, Callable]:
        """Family-specific identities SymPy proves on a derivation (``fishersym.symbolic.theorems``):
        summary key → function(derivation) → {parameter name: proven}.  The summary records
        ``all(...)`` under the key and the derived document states the result.  Default: none."""
        return {}

    def class_prediction(self, o: torch.Tensor) -> torch.Tensor | None:
        """The predicted class of raw outputs o (B, out_dim) → (B,) for families of class labels
        (an accuracy in the report), None for families that do not predict classes (the default)."""
        return None

    def __init__(self, C: int, link: Link | None = None, out_dim: int | None = None):
        self.C = int(C)
        self.link = Identity() if link is None else link
        self.out_dim = self.C if out_dim is None else int(out_dim)

    # ------------------------------------------------------------------ symbolic
    @property
    def sym_params(self) -> dict[sp.Symbol, float]:
        """Symbols of the family's fixed parameters and their numeric values."""
        return {}

    @cached_property
    def h_sym(self) -> tuple[sp.Symbol, ...]:
        """Natural parameter symbols h_1..h_C (h for C = 1)."""
        if self.C == 1:
            return (sp.Symbol("h", real=True),)
        return tuple(sp.Symbol(f"h_{a + 1}", real=True) for a in range(self.C))

    def log_partition_sym(self, h: Sequence[sp.Expr]) -> sp.Expr:  # pragma: no cover
        """F(h) as a SymPy expression: the one definition of the family."""
        raise NotImplementedError

    @cached_property
    def F_sym(self) -> sp.Expr:
        """F(h_1..h_C): :meth:`log_partition_sym` at the natural parameter symbols."""
        return self.log_partition_sym(self.h_sym)

    @cached_property
    def eta_sym(self) -> sp.Matrix:
        """η = ∇F (C × 1)."""
        return sp.Matrix([sp.diff(self.F_sym, hi) for hi in self.h_sym])

    @cached_property
    def sigma_sym(self) -> sp.Matrix:
        """Σ = ∇²F (C × C), the Fisher information w.r.t. h."""
        return sp.hessian(self.F_sym, self.h_sym)

    @cached_property
    def kappa3_sym(self) -> sp.Array:
        """κ₃ = ∇³F (C × C × C)."""
        return sp.derive_by_array(sp.Array(self.sigma_sym), self.h_sym)

    @cached_property
    def kappa4_sym(self) -> sp.Array:
        """κ₄ = ∇⁴F (C⁴)."""
        return sp.derive_by_array(self.kappa3_sym, self.h_sym)

    @cached_property
    def m4_sym(self) -> sp.Array:
        """Fourth central moment M₄ = K (THEORY §1): κ₄ + the three Σ⊗Σ pairings."""
        C, S, k4 = self.C, self.sigma_sym, self.kappa4_sym
        out = sp.MutableDenseNDimArray.zeros(C, C, C, C)
        for a, b, c, d in itertools.product(range(C), repeat=4):
            out[a, b, c, d] = k4[a, b, c, d] + S[a, b] * S[c, d] + S[a, c] * S[b, d] + S[a, d] * S[b, c]
        return sp.ImmutableDenseNDimArray(out)

    @cached_property
    def M_sym(self) -> sp.Array:
        """M = K − Σ⊗Σ (THEORY §5), so that M(u,u,u,u) = N·V₁ for direction u."""
        C, S, m4 = self.C, self.sigma_sym, self.m4_sym
        out = sp.MutableDenseNDimArray.zeros(C, C, C, C)
        for a, b, c, d in itertools.product(range(C), repeat=4):
            out[a, b, c, d] = m4[a, b, c, d] - S[a, b] * S[c, d]
        return sp.ImmutableDenseNDimArray(out)

    @cached_property
    def mbar_sym(self) -> sp.Matrix:
        """M̄ = mat(M₄) − vec(Σ)vec(Σ)ᵀ = Cov[vec(r rᵀ)] (C² × C², THEORY §3)."""
        C, M = self.C, self.M_sym
        return sp.Matrix(C * C, C * C, lambda i, j: M[i // C, i % C, j // C, j % C])

    @staticmethod
    def contract4(T: sp.Array, u: Sequence[sp.Expr]) -> sp.Expr:
        """T(u,u,u,u) = Σ_abcd T_abcd u_a u_b u_c u_d."""
        C = len(u)
        return sp.Add(*[T[a, b, c, d] * u[a] * u[b] * u[c] * u[d]
                        for a, b, c, d in itertools.product(range(C), repeat=4)])

    def direction_sym(self, name: str = "u") -> tuple[sp.Symbol, ...]:
        """Symbols of a direction in ℝ^C: ``name``_1..``name``_C (``name`` alone for C = 1), real."""
        if self.C == 1:
            return (sp.Symbol(name, real=True),)
        return tuple(sp.Symbol(f"{name}_{a + 1}", real=True) for a in range(self.C))

    def mean_params_sym(self) -> dict[sp.Expr, sp.Expr]:
        """Substitutions rewriting expressions of h in mean-parameter symbols
        (p, λ, …) for display; empty when h is the clearest coordinate."""
        return {}

    def display_coordinates(self) -> list[tuple[sp.Symbol, sp.Expr]]:
        """Display coordinates as functions of h: ``[(symbol, expression in h)]`` (THEORY §4), empty when
        h itself is displayed (no :meth:`mean_params_sym`).

        Default: each h_a is rewritten by :meth:`mean_params_sym` in one display symbol s_a, and s_a is
        the mean η_a = ∂F/∂h_a (p for the Bernoulli and the softmax, λ for the Poisson).  Families whose
        display symbols are not the means (the Gaussian with learned variance: μ, σ) override it."""
        subs = self.mean_params_sym()
        if not subs:
            return []
        out = []
        for a, h in enumerate(self.h_sym):
            syms = subs[h].free_symbols if h in subs else set()
            if len(syms) != 1:
                raise ValueError(f"{self.name}: mean_params_sym rewrites {h} in {len(syms)} symbols, so the display "
                                 "coordinates cannot be taken to be the means; give the family a "
                                 "display_coordinates method returning [(symbol, expression in h)]")
            (sym,) = syms
            out.append((sym, self.eta_sym[a]))
        return out

    def display_domain(self) -> dict[sp.Symbol, sp.Set]:
        """The set of values of each display coordinate (SymPy's inequality solving, THEORY §6.7).
        Default: from the symbol's assumptions ((0, ∞) for a positive symbol, [0, ∞) for a nonnegative
        one, ℝ otherwise); the Bernoulli's and the softmax's probabilities override it with (0, 1)."""
        out = {}
        for sym, _ in self.display_coordinates():
            out[sym] = (sp.Interval.open(0, sp.oo) if sym.is_positive else
                        sp.Interval(0, sp.oo) if sym.is_nonnegative else sp.S.Reals)
        return out

    def display_positivity_subs(self) -> dict[sp.Symbol, sp.Expr]:
        """Substitutions making the domain of the display coordinates explicit for SymPy's sign
        reasoning (``symbolic.familyforms.is_positive``), e.g. p = 1/(1 + t) with t > 0 so that 1 − p
        is visibly positive.  Default: none (positive symbols carry their sign already)."""
        return {}

    def display_sigma(self) -> sp.Matrix:
        """Σ = ∇²F in display coordinates (THEORY §13's output-space factor).  Default:
        :meth:`display` of ∇²F; the softmax gives diag(p) − ppᵀ directly."""
        return self.display(self.sigma_sym)

    def sigma_factor_sym(self) -> sp.Matrix | None:
        """A closed-form factor L with LLᵀ = Σ in display coordinates (THEORY §13), or None (the
        default): the caller then takes √Σ (C = 1) or the Cholesky factor of :meth:`display_sigma`."""
        return None

    def output_probe_forms_sym(self, u: Sequence[sp.Expr]) -> tuple[sp.Expr, sp.Expr] | None:
        """Readable forms (uᵀΣu, ‖Lᵀu‖₄⁴) of the output-space Hutchinson variance (THEORY §13) for
        L = :meth:`sigma_factor_sym`, or None (the default: the caller expands them from Σ and L)."""
        return None

    def readable_forms_sym(self, U: Sequence[sp.Symbol], W: Sequence[sp.Symbol],
                           derived: dict[str, sp.Expr]) -> dict[str, sp.Expr]:
        """Readable forms of ``derived`` = {"fisher": uᵀΣu, "var1": N·V₁ = M(u,u,u,u), "var2": N·V₂ = wᵀΣw}
        (display coordinates, directions U and W) shown in derived documents instead of the derived
        ones; the hook must prove each equal to the derived one on the family's domain and raise
        otherwise.  Default: {} (the derived forms are shown)."""
        return {}

    def display(self, expr):
        """Rewrite a derived expression in the family's display coordinates."""
        subs = self.mean_params_sym()
        f = (lambda e: sp.factor(sp.simplify(e.subs(subs)))) if subs else sp.simplify
        if isinstance(expr, (sp.MatrixBase,)):
            return expr.applyfunc(f)
        if isinstance(expr, sp.NDimArray):
            return expr.applyfunc(f)
        return f(expr)

    def lambdify(self, expr, extra: Sequence[sp.Symbol] = ()) -> Callable:
        """Numeric function of (h_1..h_C, *extra) with the fixed parameters substituted."""
        if isinstance(expr, (sp.MatrixBase, sp.NDimArray)):
            expr = sp.Array(expr) if isinstance(expr, sp.NDimArray) else expr
        e = expr.subs(self.sym_params) if self.sym_params else expr
        return sp.lambdify(list(self.h_sym) + list(extra), e, modules="mpmath")

    # ------------------------------------------------------------------ checks
    def check_h(self, h: torch.Tensor) -> torch.Tensor:
        """Validate natural parameters: a finite floating tensor of shape (..., C)."""
        if not isinstance(h, torch.Tensor):
            raise TypeError(f"{self.name}: natural parameters must be a torch.Tensor of shape (..., {self.C}), "
                            f"got {type(h).__name__}")
        if h.dim() == 0 or h.shape[-1] != self.C:
            raise ValueError(f"{self.name}: expected natural parameters of shape (..., C={self.C}), "
                             f"got shape {tuple(h.shape)}")
        if not h.is_floating_point():
            raise TypeError(f"{self.name}: natural parameters must be floating point, got {h.dtype}")
        if not torch.isfinite(h).all():
            raise ValueError(f"{self.name}: natural parameters contain non-finite values "
                             f"(shape {tuple(h.shape)}); check the model's outputs")
        self._check_domain(h)
        return h

    def _check_domain(self, h: torch.Tensor) -> None:
        """Families whose natural parameter space is not all of ℝ^C override this."""

    def check_output(self, o: torch.Tensor) -> torch.Tensor:
        """Validate raw network outputs: shape (..., out_dim), finite."""
        if not isinstance(o, torch.Tensor) or o.dim() == 0 or o.shape[-1] != self.out_dim:
            shape = tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__
            size = shape[-1] if isinstance(shape, tuple) and shape else shape
            raise ValueError(f"{self.name}: the model's output has size {size} "
                             f"in its last dimension but the family expects {self.out_dim} "
                             f"(output shape {shape}); pass the family by name ({self.name!r}) to take its "
                             "size from the model, or build it with the model's size (families.get(name, C=...))")
        if not torch.isfinite(o).all():
            raise ValueError(f"{self.name}: the model's outputs contain non-finite values")
        return o

    def natural(self, o: torch.Tensor) -> torch.Tensor:
        """h = link(o), validated."""
        return self.check_h(self.link(self.check_output(o)))

    # ------------------------------------------------------------------ numeric: F and its derivatives
    def log_partition(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """F(h) for h of shape (..., C) → (...)."""
        raise NotImplementedError

    def mean(self, h: torch.Tensor) -> torch.Tensor:
        """η = ∇F(h), shape (..., C).  Default: autodiff of ``log_partition``."""
        return self._per_point(torch.func.grad(self._F1), h, (self.C,))

    def sigma(self, h: torch.Tensor) -> torch.Tensor:
        """Σ = ∇²F(h), shape (..., C, C).  Default: autodiff of ``log_partition``."""
        return self._per_point(hessian(self._F1), h, (self.C, self.C))

    def sigma_quad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """uᵀΣu = d²/dε² F(h + εu)|₀ (THEORY §2: I(θ_i|x) for u = u_i)."""
        h, u = _as_directions(h, u)
        return self._directional(h, u, 2)

    def kappa4(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """κ₄(u,u,u,u) = d⁴/dε⁴ F(h + εu)|₀ by nested forward mode (THEORY §3)."""
        h, u = _as_directions(h, u)
        return self._directional(h, u, 4)

    def m4(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """M₄(u,u,u,u) = E[(uᵀr)⁴] = κ₄(u,u,u,u) + 3(uᵀΣu)² (THEORY §1)."""
        return self.kappa4(h, u) + 3 * self.sigma_quad(h, u) ** 2

    def mquad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """M(u,u,u,u) = M₄(u,u,u,u) − (uᵀΣu)² = κ₄(u,u,u,u) + 2(uᵀΣu)² = N·V₁ (THEORY §3)."""
        return self.kappa4(h, u) + 2 * self.sigma_quad(h, u) ** 2

    #: Whether N·V₁ = M(u,u,u,u) is evaluated as a difference of larger terms (the autodiff form
    #: κ₄ + 2(uᵀΣu)², κ₄ of either sign).  None: True exactly when ``mquad`` is this class's
    #: autodiff form.  Only the default rounding bound of :meth:`quad_forms` reads it.
    mquad_cancels: bool | None = None
    #: constant c of the default rounding bound c·C·ε·scale of :meth:`quad_forms`
    quad_error_factor: float = 64.0

    def quad_forms(self, h: torch.Tensor, u: torch.Tensor, cdim: int = -1, moments: bool = True,
                   error: bool = False):
        """(uᵀΣu, M(u,u,u,u) = N·V₁) for many directions at once (THEORY §3).

        ``cdim=1`` takes u in the layout (B, C, K) (directions as columns, as the fast MLP
        path produces them) instead of (B, K, C); ``moments=False`` skips M (returns None).
        Families with a fused closed form override this (one pass for both forms).

        **Rounding-error interface** (issue 13 items 6, 23; used by ``numeric.core.base_quantities``
        and the precision flag ``StatsResult.precision_lost``).  ``error=True`` returns a
        third tensor ``err`` (None when ``moments=False``), of the same shape, dtype and layout as M:
        a first-order bound on |M_computed − M_exact| where M_exact is N·V₁ at the given h and u
        taken as exact real numbers (the rounding of p = softmax(h), σ(h), e^h, … *is* included).
        A family that overrides ``quad_forms`` must accept ``error`` and, when it is True, return
        ``(sq, mq, err)`` with err ≥ 0 finite wherever mq is, err = 0 only where mq is computed
        exactly, and err scaling like mq under u ↦ a·u (a⁴), so that the fast path's factored
        parts (THEORY §7) carry it as they carry mq.  Write the derivation in the docstring.
        The default here is c·C·ε·|M| for forms without cancellation (``mquad_cancels`` False) and
        c·C·ε·(|M| + 4(uᵀΣu)²) for the autodiff form κ₄ + 2(uᵀΣu)² (|κ₄| ≤ |M| + 2(uᵀΣu)²; the
        nested forward-mode κ₄ is accurate to a few ε per operation relative to the size of its
        terms), c = ``quad_error_factor``.  ``error=False`` (the default) costs nothing extra.
        """
        if cdim == 1:
            u = u.transpose(-1, -2)
        sq = self.sigma_quad(h, u)
        mq = self.mquad(h, u) if moments else None
        if not error:
            return sq, mq
        return sq, mq, (None if mq is None else self.default_mquad_error(sq, mq))

    def default_mquad_error(self, sq: torch.Tensor, mq: torch.Tensor) -> torch.Tensor:
        """The default rounding bound of :meth:`quad_forms` (see there)."""
        cancels = self.mquad_cancels
        if cancels is None:
            cancels = type(self).mquad is ExponentialFamily.mquad
        scale = mq.abs() + 4 * sq * sq if cancels else mq.abs()
        return self.quad_error_factor * self.C * torch.finfo(mq.dtype).eps * scale

    def _directional(self, h: torch.Tensor, u: torch.Tensor, order: int) -> torch.Tensor:
        f: Callable = self.log_partition
        for _ in range(order):
            f = (lambda g: (lambda x: jvp(g, (x,), (u,))[1]))(f)
        return f(h)

    def _F1(self, h1: torch.Tensor) -> torch.Tensor:
        return self.log_partition(h1)

    @staticmethod
    def _per_point(fn: Callable, h: torch.Tensor, tail: tuple[int, ...]) -> torch.Tensor:
        batch = h.shape[:-1]
        flat = h.reshape(-1, h.shape[-1])
        out = vmap(fn)(flat) if flat.shape[0] > 0 else flat.new_zeros((0, *tail))
        return out.reshape(*batch, *tail)

    def kappa4_tensor(self, h: torch.Tensor) -> torch.Tensor:
        """The full κ₄ = ∇⁴F(h), shape (..., C, C, C, C).  Only for small C."""
        return self._per_point(jacfwd(jacfwd(hessian(self._F1))), h, (self.C,) * 4)

    def moment_tensors(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Σ, κ₄, M₄) at h, with M₄ = κ₄ + Σ_ab Σ_cd + Σ_ac Σ_bd + Σ_ad Σ_bc (THEORY §1);
        shapes (..., C, C), (..., C, C, C, C) twice.  The one construction of M₄."""
        S = self.sigma(h)
        k4 = self.kappa4_tensor(h)
        m4 = (k4 + torch.einsum("...ab,...cd->...abcd", S, S)
              + torch.einsum("...ac,...bd->...abcd", S, S)
              + torch.einsum("...ad,...bc->...abcd", S, S))
        return S, k4, m4

    def m4_tensor(self, h: torch.Tensor) -> torch.Tensor:
        """M₄ (..., C, C, C, C), see :meth:`moment_tensors`."""
        return self.moment_tensors(h)[2]

    @staticmethod
    def mbar_from(S: torch.Tensor, m4: torch.Tensor) -> torch.Tensor:
        """M̄ = mat(M₄) − vec(Σ)vec(Σ)ᵀ (..., C², C²) from Σ and M₄ (THEORY §3)."""
        C = S.shape[-1]
        vs = S.reshape(*S.shape[:-2], C * C)
        return m4.reshape(*S.shape[:-2], C * C, C * C) - vs.unsqueeze(-1) * vs.unsqueeze(-2)

    def mbar(self, h: torch.Tensor) -> torch.Tensor:
        """M̄ = mat(M₄) − vec(Σ)vec(Σ)ᵀ = Cov[vec(r rᵀ)], shape (..., C², C²) (THEORY §3)."""
        S, _, m4 = self.moment_tensors(h)
        return self.mbar_from(S, m4)

    # ------------------------------------------------------------------ numeric: distribution
    # ------------------------------------------------------------------ output-space factor (THEORY §13)
    #: how :meth:`sigma_factor_t` factors Σ = LLᵀ (reported by the output-space Hutchinson estimators)
    sigma_factor_name = "Cholesky factor of Σ (torch.linalg.cholesky)"

    def sigma_factor(self, h: torch.Tensor) -> torch.Tensor:
        """A factor L (..., C, C) with LLᵀ = Σ(h), used by the output-space Hutchinson estimators
        (THEORY §13): ξ = Lε has Cov ξ = Σ for any ε with E εεᵀ = I.  Default: the Cholesky
        factor (Σ must be positive definite; :attr:`sigma_factor_name` says which factor is used).
        The variance of Rademacher probes depends on the factor through ‖Lᵀu‖₄⁴."""
        S = self.sigma(self.check_h(h))
        L, info = torch.linalg.cholesky_ex(S)
        if bool((info != 0).any()):
            raise ValueError(f"{self.name}: Σ(h) is not positive definite at some input, so its Cholesky "
                             "factor (the default output-space factor L with LLᵀ = Σ) does not exist; "
                             "give the family a sigma_factor method with a factor valid for singular Σ")
        return L

    def sigma_factor_t(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Lᵀu for directions u (..., K, C) at h (..., C) → (..., K, C) (THEORY §13):
        uᵀLε = (Lᵀu)ᵀε, so Var_ε (uᵀLε)² = 2I² − 2‖Lᵀu‖₄⁴ for Rademacher ε."""
        return torch.einsum("...ca,...kc->...ka", self.sigma_factor(h), u)

    def sigma_factor_apply(self, h: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """ξ = Lε for probes ε (n, ..., C) → (n, ..., C), so that Cov ξ = Σ(h) (THEORY §13)."""
        return torch.einsum("...ca,n...a->n...c", self.sigma_factor(h), eps)

    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n label draws y ~ p(y|h), returned as t(y) with shape (n, ..., C)."""
        raise NotImplementedError  # pragma: no cover

    def statistic(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """t(y) (B, C) of observed labels y (THEORY §9): the default reads y as the statistic itself,
        (B,) scalars for C = 1 or (B, C).  Families whose t is not the identity override this."""
        y = y.to(dtype)
        if y.dim() == 1:
            y = y.unsqueeze(-1)
        if y.dim() != 2 or y.shape[-1] != self.C:
            raise ValueError(f"{self.name}: labels of shape {tuple(y.shape)} do not give statistics of size "
                             f"C={self.C}; pass (batch, {self.C})" + (" or (batch,)" if self.C == 1 else ""))
        return y

    def check_statistic(self, t: torch.Tensor) -> torch.Tensor:
        """Validate statistics t(y) of *observed* labels (B, C): finite; families with a restricted
        support (Bernoulli, Poisson) also check that.  Returns t."""
        if not torch.isfinite(t).all():
            raise ValueError(f"{self.name}: the observed labels contain NaN or infinite values")
        return t

    def log_base_measure(self, t: torch.Tensor) -> torch.Tensor:
        """log π(y) for statistics t (..., C) → (...)."""
        raise NotImplementedError  # pragma: no cover

    def log_prob(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """log p(y|h) = log π(y) + t(y)ᵀh − F(h)."""
        return self.log_base_measure(t) + (t * h).sum(-1) - self.log_partition(h)

    def support(self, h: torch.Tensor, tail: float = 1e-15) -> Support:
        """Enumerate the support (discrete families), truncating at mass ``tail``."""
        raise TypeError(f"{self.name} is not a discrete family; its support cannot be enumerated")

    def support_radius_sq(self, h: torch.Tensor) -> torch.Tensor | None:
        """B(h) = max_y ‖t(y) − η‖² when the support is bounded (Proposition 4.3), else None."""
        return None

    # ------------------------------------------------------------------ constants hooks (THEORY §5)
    def closed_form_constants(self, h: torch.Tensor, restricted: bool = False,
                              sigma_max: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Certified closed-form constants where the paper has them.

        ``sigma_max``: a certified upper bound of λ_max(Σ) the caller already has (forms such
        as Corollary R.1 use it; computed here when None).

        Keys (each a tensor of shape h.shape[:-1]): ``M_max_upper`` (≥ λ̃_max(M)),
        ``M_min_lower`` (≤ λ̃_min(M)), ``K_max_upper``, ``K_min_lower``, and
        ``exact`` entries ``M_max``, ``M_min``, ``K_max``, ``K_min`` when the
        value is known exactly.  ``restricted`` asks for the 𝟙^⊥ versions.
        """
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(C={self.C}, link={self.link!r})"
