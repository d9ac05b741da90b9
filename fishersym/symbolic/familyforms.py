"""Family-level symbolic forms for a generic direction (THEORY §3, §4, §5, §6.7).

For a family with log-partition F these are polynomials in a direction
u = (u_1..u_C) (and w for V₂), derived from F's cumulant tensors and written
in the family's display coordinates (p for the Bernoulli and categorical,
λ for the Poisson, (μ, σ) for the Gaussian with learned variance; h itself
for the fixed-variance Gaussian, where Σ does not depend on h):

    I(u)        = uᵀΣu
    N·V₁ (moment form)    = M₄(u,u,u,u) − (uᵀΣu)²
    N·V₁ (cumulant form)  = κ₄(u,u,u,u) + 2(uᵀΣu)²
    N·V₁ (simplified)     = M(u,u,u,u), M = K − Σ⊗Σ
    N·V₂(w)     = wᵀΣw

Per parameter θ_i the derivation substitutes u = u_i, w = w_i.  The forms
are computed once per family (they cost seconds for the categorical) and
cached.  A family may give readable forms for display (its ``readable_forms_sym``
hook): the softmax's *centred* forms Σ_a p_a d_a² etc. with d = u − ū, which SymPy
proves equal to the derived ones on the simplex (THEORY §4, row 3).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

__all__ = ["FamilyForms", "family_forms", "coordinates"]


def coordinates(fam) -> list[tuple[sp.Symbol, sp.Expr]]:
    """Display coordinates of the family as functions of h (through η = ∇F): the family's
    ``display_coordinates`` hook (issue 11 item 4).

    Returns ``[(symbol, expression in h)]``; empty when h itself is displayed.
    """
    return fam.display_coordinates()


def _positivity_subs(fam, coords) -> dict:
    """Substitutions that make the domain explicit for SymPy's sign reasoning (the family's
    ``display_positivity_subs`` hook, e.g. probabilities p_a = t_a / Σ t with t_a > 0, so that
    1 − p is visibly positive); none where h itself is displayed."""
    return fam.display_positivity_subs() if coords else {}


@dataclass
class FamilyForms:
    """The forms of one family along generic directions u = ∂h/∂θ_i and w = ∂²h/∂θ_i² (THEORY §3, §4):
    I = uᵀΣu, N·V₁ = M(u,u,u,u), N·V₂ = wᵀΣw, κ₄ and M₄ contracted with u, Σ and η, in the family's
    display coordinates, with the trade-off condition V₂ ≤ V₁ (§6.7) and the Theorem 4.1 constants
    (§5).  Built and cached by :func:`family_forms`."""

    fam: object
    U: tuple
    Wd: tuple
    coords: list
    fisher: sp.Expr
    var1: sp.Expr          # N·V₁ simplified, M(u,u,u,u)
    var1_moment: sp.Expr   # N·V₁ = M₄(u) − I(u)²
    var1_cumulant: sp.Expr  # N·V₁ = κ₄(u) + 2 I(u)²
    var2: sp.Expr          # N·V₂ = wᵀΣw
    kappa4: sp.Expr
    m4: sp.Expr
    sigma: sp.Matrix
    eta: sp.Matrix
    readable: dict = field(default_factory=dict)   # name → readable, proven-equal form
    trade_lhs: sp.Expr = sp.Integer(0)
    trade_rhs: sp.Expr = sp.Integer(0)
    trade_note: str = ""
    pos_subs: dict = field(default_factory=dict)
    lam: dict = field(default_factory=dict)        # symbolic Theorem 4.1 constants
    lam_named: bool = False

    def display(self, e):
        """``e`` rewritten in the family's display coordinates (simplified in h where it has none)."""
        return self.fam.display(e) if self.coords else sp.simplify(e)


def is_positive(expr: sp.Expr, pos_subs: dict) -> bool:
    """True when SymPy can decide expr > 0 (after making the coordinates' domain explicit)."""
    if expr.is_positive:
        return True
    if pos_subs:
        e = sp.factor(sp.together(expr.xreplace(pos_subs)))
        if e.is_positive:
            return True
    return False


def cancel_common(lhs: sp.Expr, rhs: sp.Expr, pos_subs: dict, finish=None
                  ) -> tuple[sp.Expr, sp.Expr, list]:
    """Divide lhs ≤ rhs by common factors that are positive (always allowed) or
    even powers of real expressions (allowed where they are non-zero; returned
    in the third slot so the caller can state the caveat).  Works factor by
    factor on the product structure (no expansion); ``finish`` (e.g. sp.factor)
    is applied to both sides at the end."""
    if lhs == 0 or rhs == 0:
        return lhs, rhs, []
    lhs, rhs = sp.factor_terms(lhs), sp.factor_terms(rhs)

    def powers(e):
        d: dict = {}
        coeff, rest = e.as_coeff_Mul()
        for f in sp.Mul.make_args(rest):
            b, ex = f.as_base_exp()
            if ex.is_Integer and int(ex) > 0:
                d[b] = d.get(b, 0) + int(ex)
            else:
                d[f] = d.get(f, 0) + 1
        return coeff, d

    cl, dl = powers(lhs)
    cr, dr = powers(rhs)
    divide: dict = {}
    caveats = []
    undecided: dict = {}
    for b in sorted(set(dl) & set(dr), key=sp.default_sort_key):
        e = min(dl[b], dr[b])
        if is_positive(b, pos_subs):
            divide[b] = e
        elif e % 2 == 0 and b.is_real:
            divide[b] = e
            caveats.append(b)
        else:
            undecided[b] = e
    # the sign-undecided common factors together with the numeric coefficients
    sign = sp.Integer(1)
    if cl.is_negative and cr.is_negative:
        sign = sp.Integer(-1)
    if undecided:
        g = sign * sp.Mul(*[b ** e for b, e in undecided.items()])
        if is_positive(g, pos_subs):
            divide.update(undecided)
            cl, cr = cl / sign, cr / sign
    elif sign == -1:
        pass  # dividing by −1 alone would flip the relation; keep it
    if cl.is_Rational and cr.is_Rational and cl > 0 and cr > 0:
        g = sp.gcd(cl, cr)
        cl, cr = cl / g, cr / g

    def rebuild(c, d):
        return c * sp.Mul(*[b ** (e - divide.get(b, 0)) for b, e in d.items()])

    L, R = rebuild(cl, dl), rebuild(cr, dr)
    if finish is not None:
        L, R = finish(L), finish(R)
    return L, R, caveats


def _lambda_constants(fam, F: FamilyForms) -> tuple[dict, bool]:
    """Symbolic constants of Theorem 4.1 (THEORY §5): exact where SymPy finds them
    (C = 1; Σ a multiple of the identity with M(v) = c‖v‖⁴), named symbols otherwise."""
    C = fam.C
    S = F.sigma
    if C == 1:
        s = S[0, 0]
        m = sp.factor(F.var1.xreplace({F.U[0]: 1}))
        return {"sigma_min": s, "sigma_max": s, "M_min": m, "M_max": m}, False
    s0 = S[0, 0]
    if sp.simplify(S - s0 * sp.eye(C)) == sp.zeros(C, C):
        norm2 = sp.Add(*[u ** 2 for u in F.U])
        c = sp.factor(F.var1.xreplace({u: (1 if a == 0 else 0) for a, u in enumerate(F.U)}))
        if sp.expand(F.var1 - c * norm2 ** 2) == 0:
            return {"sigma_min": s0, "sigma_max": s0, "M_min": c, "M_max": c}, False
    names = {
        "sigma_min": (r"\lambda_{\min}(\Sigma)", "lambda_min_Sigma"),
        "sigma_max": (r"\lambda_{\max}(\Sigma)", "lambda_max_Sigma"),
        "M_min": (r"\tilde\lambda_{\min}(M)", "lambdat_min_M"),
        "M_max": (r"\tilde\lambda_{\max}(M)", "lambdat_max_M"),
    }
    return _named(names), True


#: LaTeX names of the named constants (symbol → TeX)
NAMED_LATEX: dict[sp.Symbol, str] = {}


def sharp_constants() -> dict:
    """Named 𝟙^⊥ constants for shift-invariant families ([beyond], THEORY §5)."""
    names = {
        "sigma_min": (r"\lambda_{\min}(\Sigma|_{\mathbf{1}^\perp})", "lambda_min_Sigma_perp"),
        "sigma_max": (r"\lambda_{\max}(\Sigma|_{\mathbf{1}^\perp})", "lambda_max_Sigma_perp"),
        "M_min": (r"\tilde\lambda_{\min}(M|_{\mathbf{1}^\perp})", "lambdat_min_M_perp"),
        "M_max": (r"\tilde\lambda_{\max}(M|_{\mathbf{1}^\perp})", "lambdat_max_M_perp"),
    }
    return _named(names)


def _named(names: dict[str, tuple[str, str]]) -> dict[str, sp.Symbol]:
    """Nonnegative symbols for named constants (key → (TeX, symbol name)), registered in NAMED_LATEX."""
    out = {}
    for k, (tex, nm) in names.items():
        sym = sp.Symbol(nm, nonnegative=True)
        NAMED_LATEX[sym] = tex
        out[k] = sym
    return out


def family_forms(fam) -> FamilyForms:
    """Cached :class:`FamilyForms` (keyed by family class, C, parameters and link)."""
    key = (type(fam).__name__, fam.C, tuple(sorted((str(k), v) for k, v in fam.sym_params.items())),
           repr(fam.link))
    if key not in _CACHE:
        _CACHE[key] = _compute(fam)
    return _CACHE[key]


_CACHE: dict = {}


def _compute(fam) -> FamilyForms:
    coords = coordinates(fam)
    U = fam.direction_sym("u")
    Wd = fam.direction_sym("w")
    disp = (lambda e: fam.display(e)) if coords else (lambda e: sp.factor(sp.simplify(e)))
    S = fam.sigma_sym
    I_h = sp.expand((sp.Matrix([U]) * S * sp.Matrix(U))[0, 0])
    V2_h = sp.expand((sp.Matrix([Wd]) * S * sp.Matrix(Wd))[0, 0])
    k4_h = sp.expand(fam.contract4(fam.kappa4_sym, U))
    m4_h = sp.expand(fam.contract4(fam.m4_sym, U))
    M_h = sp.expand(fam.contract4(fam.M_sym, U))
    fisher, var2 = disp(I_h), disp(V2_h)
    k4, m4, var1 = disp(k4_h), disp(m4_h), disp(M_h)
    F = FamilyForms(fam, U, Wd, coords, fisher=fisher, var1=var1,
                    var1_moment=m4 - fisher ** 2, var1_cumulant=k4 + 2 * fisher ** 2, var2=var2,
                    kappa4=k4, m4=m4, sigma=disp(S), eta=disp(fam.eta_sym))
    F.pos_subs = _positivity_subs(fam, coords)
    if coords:   # the family's readable forms (softmax: centred), proven equal by the family's hook
        F.readable = fam.readable_forms_sym(U, Wd, {"fisher": fisher, "var1": var1, "var2": var2})
    # trade-off condition V₂ ≤ V₁ (THEORY §6.7), N cancels
    if F.readable:
        lhs, rhs = F.readable["var2"], F.readable["var1"]
    else:
        lhs, rhs, _ = cancel_common(sp.factor(var2), sp.factor(var1), F.pos_subs, finish=sp.factor)
    F.trade_lhs, F.trade_rhs = lhs, rhs
    F.lam, F.lam_named = _lambda_constants(fam, F)
    return F
