"""Symbolic derivation of the Fisher diagonal, V₁, V₂ and the bounds for a small MLP.

THEORY references: §1 (u_i = ∂h/∂θ_i, w_i = ∂²h/∂θ_i², the link's
curvature enters w), §2–§3 (I = uᵀΣu, V₁ in moment and cumulant form,
V₂ = wᵀΣw/N, Lemma 3.1), §5 (Theorem 4.1 bounds), §6 (structural results,
trade-off condition V₂ ≤ V₁), §7 (the layer recursion).

How u_i and w_i are obtained: forward-mode (tangent) propagation of the
first and second derivative along θ_i through the network written in
intermediate symbols,

    ż^{(l)} = ∂z^{(l)}/∂θ_i directly (a^{(l-1)}_k e_j for W^{(l)}_{jk}, e_j for b^{(l)}_j), z̈^{(l)} = 0,
    ż^{(m)} = W^{(m)} (φ'_{m-1}(z^{(m-1)}) ⊙ ż^{(m-1)}),
    z̈^{(m)} = W^{(m)} (φ''_{m-1}(z^{(m-1)}) ⊙ ż^{(m-1)}² + φ'_{m-1}(z^{(m-1)}) ⊙ z̈^{(m-1)})   (m > l),

then through the link h = g(o): u = J_g ż^{(L)}, w = J_g z̈^{(L)} + ∇²g[ż^{(L)}, ż^{(L)}].
φ', φ'' are written through the activation symbols (σ' = a(1 − a) for the
sigmoid …), so every expression stays in terms of x, θ, z, a and the
family's display coordinates (p, λ, μ, σ).  The tests check the result
against SymPy's own differentiation of the fully expanded network and
against torch.autograd.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sympy as sp
import torch

from ..bounds.theorem41 import theorem41_expressions
from .familyforms import NAMED_LATEX, FamilyForms, cancel_common, family_forms, sharp_constants
from .network import Network, ParamEntry

if TYPE_CHECKING:
    from ..numeric.stats import StatsResult

__all__ = ["Derivation", "ParamDerivation", "derive", "SizeError", "MAX_SIZE", "MAX_PARAMS"]

#: refuse networks whose estimated expression size exceeds this (``force=True`` overrides)
MAX_SIZE = 6000
#: … or that have more parameters than this
MAX_PARAMS = 120


class SizeError(ValueError):
    """The network is too large for a readable symbolic derivation."""


@dataclass
class ParamDerivation:
    """Everything derived for one parameter θ_i (all V's include the 1/N factor)."""

    entry: ParamEntry
    u: tuple            # u_i = ∂h/∂θ_i, C components
    w: tuple            # w_i = ∂²h/∂θ_i², C components
    fisher: sp.Expr     # I(θ_i|x) = u_iᵀ Σ u_i
    var1: sp.Expr       # V₁ = M(u_i,u_i,u_i,u_i)/N
    var1_moment: sp.Expr    # (M₄(u_i⁴) − I²)/N
    var1_cumulant: sp.Expr  # (κ₄(u_i⁴) + 2I²)/N
    var2: sp.Expr       # w_iᵀ Σ w_i / N
    u_sq: sp.Expr
    w_sq: sp.Expr
    bounds: dict = field(default_factory=dict)
    trade_lhs: sp.Expr = sp.Integer(0)   # V₂ ≤ V₁  ⟺  trade_lhs ≤ trade_rhs
    trade_rhs: sp.Expr = sp.Integer(0)
    trade_caveats: list = field(default_factory=list)
    _w_zero: bool | None = None

    def trade_caveat_note(self, nonzero) -> str:
        """The proviso of the trade-off condition when common factors were cancelled from it (THEORY §6.7):
        " (where c₁ ≠ 0, …; both variances vanish otherwise)", each item written by ``nonzero(c)``
        (a document's own notation), or "" when nothing was cancelled."""
        if not self.trade_caveats:
            return ""
        return " (where " + ", ".join(nonzero(c) for c in self.trade_caveats) + "; both variances vanish otherwise)"

    @property
    def symbol(self) -> sp.Symbol:
        """The parameter's SymPy symbol θ_i."""
        return self.entry.symbol

    @property
    def w_is_zero(self) -> bool:
        """SymPy's verdict that w_i ≡ 0 (hence V₂ ≡ 0).

        A component that is not structurally 0 is shown non-zero by a witness (a
        random rational point where it evaluates to a non-zero number); only
        otherwise is ``sp.simplify`` asked to prove it 0."""
        if self._w_zero is None:
            self._w_zero = all(_is_zero(c) for c in self.w)
        return self._w_zero

    @property
    def trade_condition(self) -> sp.Expr:
        """The relation 'Î₂ is at least as good as Î₁', simplified (THEORY §6.7)."""
        if self.trade_lhs == 0:
            return sp.true
        return sp.Le(self.trade_lhs, self.trade_rhs, evaluate=False)


class Derivation:
    """The symbolic derivation for a network and a family (build with :func:`derive`)."""

    def __init__(self, network: Network, family, n_samples, forms: FamilyForms):
        self.network = network
        self.family = family
        self.N = n_samples
        self.forms = forms
        self.params: dict[sp.Symbol, ParamDerivation] = {}
        self._summary = None
        self.latex_names = dict(network.latex_names)
        self.latex_names.update(NAMED_LATEX)
        if isinstance(n_samples, sp.Symbol):
            self.latex_names[n_samples] = "N"
        o = list(network.output)
        self.h_exprs = list(family.link.sym(o))
        self.link_is_identity = all(sp.simplify(he - oi) == 0 for he, oi in zip(self.h_exprs, o))

    # ------------------------------------------------------------------ lookup
    def __getitem__(self, key) -> ParamDerivation:
        """Per-parameter results by symbol, symbol name or torch label (KeyError lists the names)."""
        entry = self.network.param(key)
        return self.params[entry.symbol]

    def __iter__(self):
        return iter(self.params.values())

    def __len__(self) -> int:
        return len(self.params)

    @property
    def names(self) -> list[str]:
        """The names of the derived parameters' symbols, in derivation order."""
        return [p.symbol.name for p in self.params.values()]

    # ------------------------------------------------------------------ definitions
    def definitions(self) -> list[tuple[sp.Symbol, sp.Expr]]:
        """Every intermediate symbol with its definition, in evaluation order:
        network (z, a), natural parameters h = link(o), display coordinates (p, λ, …)."""
        defs = list(self.network.definitions())
        defs += list(zip(self.family.h_sym, self.h_exprs))
        defs += list(self.forms.coords)
        return defs

    def cse(self, which=("u", "w")):
        """Common-subexpression elimination over all parameters' u_i and w_i.

        Returns ``(replacements, reduced)`` with ``replacements`` a list of
        (ξ_n, expression) and ``reduced[symbol][name]`` the reduced components.
        """
        exprs, index = [], []
        for s, pd in self.params.items():
            for nm in which:
                for c, e in enumerate(getattr(pd, nm)):
                    exprs.append(e)
                    index.append((s, nm, c))
        xi = sp.numbered_symbols("xi_", real=True, start=1)
        repl, red = sp.cse(exprs, symbols=xi, optimizations=None, order="canonical")
        out: dict = {}
        for (s, nm, _c), e in zip(index, red):
            out.setdefault(s, {}).setdefault(nm, []).append(e)
        return repl, out

    # ------------------------------------------------------------------ numeric
    def evaluate(self, model: torch.nn.Module, x: torch.Tensor, n_samples: int | None = None,
                 optimised: bool = True, extra: bool = False, *, optimise: bool | None = None) -> StatsResult:
        """Evaluate at a torch model's parameters and inputs x (batch, d_in).

        Returns a :class:`~fishersym.numeric.stats.StatsResult` — the type of
        ``fishersym.numeric.conditional_stats``, with ``path="symbolic"`` — whose mappings
        ``{param name: tensor (batch, *param.shape)}`` are the keys of
        :mod:`fishersym.bounds.theorem41` (``fisher``, ``var1``, ``var2``, the certified bounds,
        the ``_opt`` V₁ bounds with ``optimised=True`` and, for shift-invariant families, the
        ``_sharp`` keys), the relative spreads ``rel_sd1``/``rel_sd2`` and Cantelli's
        ``prob_neg2_upper``; ``result.groups`` holds the per-module sums.  Bounds use the numeric
        family constants (:func:`fishersym.families.constants.family_constants`): certified for
        the plain keys, optimised for ``_opt``, restricted to 𝟙^⊥ for ``_sharp``.  ``extra=True``
        adds ``u``, ``w`` (batch, *shape, C), ``var1_moment``, ``var1_cumulant``, ``u_sq``,
        ``w_sq`` and the symbolic bounds ``sym_<key>`` (closed-form constants only).
        ``optimise=`` is the deprecated spelling of ``optimised=``.
        """
        from ..families.constants import resolve_optimised
        from .evaluate import evaluate as _evaluate
        optimised = resolve_optimised(optimised, optimise, "Derivation.evaluate")
        return _evaluate(self, model, x, n_samples=n_samples, optimised=optimised, extra=extra)

    # ------------------------------------------------------------------ output
    def to_latex(self, path=None, title: str | None = None, description: str | None = None) -> str:
        """A standalone LaTeX document of the derivation (written to ``path`` if given)."""
        from .latex import derivation_latex
        text = derivation_latex(self, title=title, description=description)
        if path is not None:
            from pathlib import Path
            Path(path).write_text(text, encoding="utf-8")
        return text

    def summary(self) -> dict:
        """Structural facts SymPy established (used by the LaTeX and the catalogue index)."""
        from .theorems import summary
        return summary(self)

    def __repr__(self) -> str:
        return (f"Derivation({self.network!r}, family={self.family.name}, N={self.N}, "
                f"{len(self.params)} parameters)")


# ---------------------------------------------------------------------- derivation
def _tangents(net: Network, p: ParamEntry) -> tuple[list, list]:
    """(ż, z̈) of the network output along parameter p (forward mode, module docstring)."""
    l = p.layer
    n_l = net.widths[l]
    dz = [sp.Integer(0)] * n_l
    if p.kind == "weight":
        assert p.col is not None, "a weight's ParamEntry always carries its column k"
        dz[p.row] = net.a[l - 1][p.col]
    else:
        dz[p.row] = sp.Integer(1)
    d2z = [sp.Integer(0)] * n_l
    for m in range(l + 1, net.L + 1):
        act = net.activations[m - 2]
        zs, as_ = net.z[m - 2], net.a[m - 1]
        da, d2a = [], []
        for i in range(len(zs)):
            if dz[i] == 0 and d2z[i] == 0:
                da.append(sp.Integer(0))
                d2a.append(sp.Integer(0))
                continue
            s1, s2 = act.d1(zs[i], as_[i]), act.d2(zs[i], as_[i])
            da.append(s1 * dz[i])
            d2a.append(s2 * dz[i] ** 2 + s1 * d2z[i])
        Wm = net.W[m - 1]
        dz = [sp.Add(*[Wm[j, i] * da[i] for i in range(len(da)) if da[i] != 0]) for j in range(Wm.rows)]
        d2z = [sp.Add(*[Wm[j, i] * d2a[i] for i in range(len(d2a)) if d2a[i] != 0]) for j in range(Wm.rows)]
    return dz, d2z


def _is_zero(e: sp.Expr) -> bool:
    e = sp.sympify(e)
    if e == 0:
        return True
    fs = sorted(e.free_symbols, key=lambda s: s.name)
    for k in range(3):
        pt = {s: sp.Rational(3 + 2 * i + k, 7 + i + 3 * k) for i, s in enumerate(fs)}
        try:
            val = complex(e.xreplace(pt).evalf(30))
        except (TypeError, ValueError):
            continue
        if abs(val) > 1e-20:
            return False
    return sp.simplify(e) == 0


def _link_derivatives(h_exprs, o):
    J = [[sp.diff(he, oi) for oi in o] for he in h_exprs]
    H = [[[sp.diff(he, oi, oj) for oj in o] for oi in o] for he in h_exprs]
    return J, H


def _check_size(net: Network, force: bool) -> None:
    size = net.expression_size()
    if force:
        return
    if size > MAX_SIZE or net.n_params > MAX_PARAMS:
        raise SizeError(
            f"network {list(net.widths)} is too large for a symbolic derivation: {net.n_params} parameters "
            f"(limit {MAX_PARAMS}), estimated expression size {size} (limit {MAX_SIZE}); the expressions "
            "would blow up. Use fishersym.numeric for large networks, or pass force=True (--force) to try anyway.")


def derive(network: Network, family=None, n_samples=None, params=None, force: bool = False) -> Derivation:
    r"""Derive u_i, w_i, I, V₁, V₂, the Theorem 4.1 bounds and the trade-off condition symbolically.

    For every parameter of ``network`` (or those named in ``params``): u_i = ∂h/∂θ_i and
    w_i = ∂²h/∂θ_i² by forward-mode tangents through the network and the link (module docstring),
    then I, V₁ (moment and cumulant forms), V₂ (THEORY §3), the Theorem 4.1 bounds (THEORY §5, and
    the 𝟙^⊥ ``_sharp`` bounds for shift-invariant families) and the trade-off condition
    V₂ ≤ V₁ (THEORY §6):

    .. math::

        I(\theta_i \mid x) = u_i^\top \Sigma u_i, \qquad
        V_1 = \frac{1}{N}\bigl[M_4(u_i, u_i, u_i, u_i) - (u_i^\top \Sigma u_i)^2\bigr]
            = \frac{1}{N}\bigl[\kappa_4(u_i, u_i, u_i, u_i) + 2 (u_i^\top \Sigma u_i)^2\bigr],

        V_2 = \frac{1}{N}\, w_i^\top \Sigma w_i, \qquad
        V_2 \le V_1 \iff w_i^\top \Sigma w_i \le M_4(u_i, u_i, u_i, u_i) - (u_i^\top \Sigma u_i)^2.

    Args:
        network: the symbolic network (:func:`~fishersym.symbolic.mlp`).
        family: a name or :class:`~fishersym.families.ExponentialFamily` (defaults to the
            network's); its output size must match the network's.
        n_samples: the number of label samples N (an int, or None for a symbol N).
        params: the parameter names (symbols such as ``"W1_1_1"``) to derive (None: all).
        force: derive even a network whose expressions would blow up (``--force``).

    Returns:
        Derivation: a :class:`ParamDerivation` per parameter symbol (``u``, ``w``, ``fisher``,
        ``var1`` and its moment and cumulant forms, ``var2``, the bounds, ``trade_condition``).

    Raises:
        SizeError: for networks whose expressions would blow up (``force=True`` overrides).
        KeyError: for unknown parameter names (listing the available ones).
        ValueError: without a family, for a family whose size differs from the network's outputs, or
            for ``n_samples`` that is not a positive integer.

    Examples:
        >>> from fishersym.symbolic import mlp
        >>> d = derive(mlp([1, 1], activation="sigmoid", family="bernoulli"))   # logistic regression
        >>> d["b1_1"].fisher, d["b1_1"].var2
        (-p*(p - 1), 0)
    """
    from ..families import ExponentialFamily, get as get_family
    if family is None:
        family = network.family
        if family is None:
            raise ValueError("derive() needs a family (the network was built without one)")
    fam = get_family(family) if not isinstance(family, ExponentialFamily) else family
    if fam.out_dim != network.widths[-1]:
        raise ValueError(f"the network has {network.widths[-1]} output(s) but the family {fam.name!r} "
                         f"expects {fam.out_dim}")
    if n_samples is None:
        N = sp.Symbol("N", positive=True, integer=True)
    else:
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        N = sp.Integer(n_samples)
    selected = None
    if params is not None:
        selected = [network.param(k).symbol for k in params]
    _check_size(network, force)

    forms = family_forms(fam)
    D = Derivation(network, fam, N, forms)
    o = list(network.output)
    J, H = _link_derivatives(D.h_exprs, o)
    C = fam.C
    sharp = sharp_constants() if fam.shift_invariant else None
    for p in network.params:
        if selected is not None and p.symbol not in selected:
            continue
        dz, d2z = _tangents(network, p)
        u = tuple(sp.Add(*[J[c][d] * dz[d] for d in range(len(o))]) for c in range(C))
        w = tuple(sp.Add(*[J[c][d] * d2z[d] for d in range(len(o))])
                  + sp.Add(*[H[c][d][e] * dz[d] * dz[e] for d in range(len(o)) for e in range(len(o))])
                  for c in range(C))
        sub_u = dict(zip(forms.U, u))
        sub_w = dict(zip(forms.Wd, w))
        fisher = forms.fisher.xreplace(sub_u)
        var1 = forms.var1.xreplace(sub_u) / N
        var1_m = forms.var1_moment.xreplace(sub_u) / N
        var1_c = forms.var1_cumulant.xreplace(sub_u) / N
        var2 = forms.var2.xreplace(sub_w) / N
        u_sq = sp.Add(*[c ** 2 for c in u])
        w_sq = sp.Add(*[c ** 2 for c in w])
        bounds = theorem41_expressions(u_sq, w_sq, forms.lam, N)      # Theorem 4.1, one definition
        if sharp is not None:
            ubar = sp.Add(*u) / C
            wbar = sp.Add(*w) / C
            up = sp.Add(*[(c - ubar) ** 2 for c in u])
            wp = sp.Add(*[(c - wbar) ** 2 for c in w])
            bounds.update(theorem41_expressions(up, wp, sharp, N, "_sharp"))
        pd = ParamDerivation(p, u, w, fisher, var1, var1_m, var1_c, var2, u_sq, w_sq, bounds)
        if all(c == 0 for c in w):
            pd.trade_lhs, pd.trade_rhs = sp.Integer(0), sp.factor_terms(forms.trade_rhs.xreplace(sub_u))
        else:
            lhs = forms.trade_lhs.xreplace(sub_w)
            rhs = forms.trade_rhs.xreplace(sub_u)
            pd.trade_lhs, pd.trade_rhs, pd.trade_caveats = cancel_common(lhs, rhs, forms.pos_subs)
        D.params[p.symbol] = pd
    return D
