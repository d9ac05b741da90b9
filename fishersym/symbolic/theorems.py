"""Structural theorems proven by SymPy on a derivation (THEORY §6).

* §6.1 / §6.2 / §6.3: w_i ≡ 0 (hence V₂ ≡ 0) for the last layer, for GLMs
  (no hidden layer) and for piecewise-linear activations (a.e.).  Proven two
  ways: the derived w_i simplifies to 0, and, independently, SymPy's own
  second derivative of the *fully expanded* network h(x; θ) vanishes
  (:func:`w_zero_by_expansion`).
* §4 / Prop. 5.1: for the fixed-variance Gaussian, V₁ = 2σ⁴‖u‖⁴/N.
* §4: for the Bernoulli, V₁ = 0 at p = ½.
* §6.7: the trade-off condition V₂ ≤ V₁, simplified.
"""
from __future__ import annotations

import sympy as sp

__all__ = ["summary", "w_zero_by_expansion", "gaussian_v1_identity", "bernoulli_half_zero",
           "expanded_h"]


def expanded_h(D) -> list[sp.Expr]:
    """h(x; θ) = link(o(x; θ)) with every intermediate substituted."""
    o = D.network.expanded_output()
    return list(D.family.link.sym(o))


def w_zero_by_expansion(D, param) -> bool:
    """Independent proof that ∂²h/∂θ² ≡ 0 (a.e.): differentiate the expanded network twice."""
    s = D.network.param(param).symbol
    for he in expanded_h(D):
        d2 = sp.diff(he, s, 2)
        if sp.simplify(d2) != 0:
            return False
    return True


def gaussian_v1_identity(D) -> dict[str, bool]:
    """Per parameter: SymPy proves V₁ − 2σ⁴‖u‖⁴/N = 0 (fixed-variance Gaussian, THEORY §4)."""
    from ..families import Gaussian
    if not isinstance(D.family, Gaussian):
        raise ValueError("gaussian_v1_identity applies to the fixed-variance Gaussian only")
    (s2,) = D.family.sym_params
    out = {}
    for pd in D:
        out[pd.symbol.name] = sp.expand(pd.var1 - 2 * s2 ** 2 * pd.u_sq ** 2 / D.N) == 0
    return out


def bernoulli_half_zero(D) -> dict[str, bool]:
    """Per parameter: SymPy proves V₁ = 0 at p = ½ (Bernoulli, THEORY §4)."""
    from ..families import Bernoulli
    if not isinstance(D.family, Bernoulli):
        raise ValueError("bernoulli_half_zero applies to the Bernoulli only")
    (p, _), = D.forms.coords
    out = {}
    for pd in D:
        v = pd.var1.subs(p, sp.Rational(1, 2))
        out[pd.symbol.name] = v == 0 or sp.simplify(v) == 0
    return out


def summary(D) -> dict:
    """What SymPy established for this derivation (used by the LaTeX and the catalogue index)."""
    if getattr(D, "_summary", None) is not None:
        return D._summary
    D._summary = _summary(D)
    return D._summary


def _summary(D) -> dict:
    net = D.network
    zero = [pd.symbol.name for pd in D if pd.w_is_zero]
    last = [pd.symbol.name for pd in D if pd.entry.layer == net.L]
    out = {
        "n_params": len(D),
        "v2_zero": zero,
        "v2_zero_all": len(zero) == len(D),
        "last_layer_v2_zero": all(n in zero for n in last),
        "glm": net.L == 1,
        "piecewise_linear": all(a.piecewise_linear for a in net.activations),
        "v2_nonzero": [pd.symbol.name for pd in D if not pd.w_is_zero],
        "v2_nonzero_last": [pd.symbol.name for pd in D if not pd.w_is_zero and pd.entry.layer == net.L],
        "link_affine": D.link_is_identity or all(all(sp.diff(he, o, 2) == 0 for o in net.output)
                                                for he in D.h_exprs),
    }
    for key, theorem in D.family.symbolic_theorems().items():   # family hooks (issue 11 item 4)
        out[key] = all(theorem(D).values())
    return out
