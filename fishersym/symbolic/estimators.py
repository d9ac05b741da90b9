"""Closed-form variances of the estimators practitioners use, derived and proven by SymPy (THEORY §13).

Notation of THEORY §13: for input m, s_m = u_mᵀ r_m is the score for one
sampled label (E s_m = 0, E s_m² = I_m = u_mᵀ Σ_m u_m, Var s_m² = v_m =
N·V₁(θ|x_m)).  Every estimator below targets Σ_m I_m; every variance is that
of one draw.

* batched squared gradient (Σ_m s_m)²  (EWC "batched", Sophia-GNB):
  Var = Σ_m v_m + 2[(Σ_m I_m)² − Σ_m I_m²]                    (:func:`batched_variance`)
* output-space Hutchinson (uᵀLε)², LLᵀ = Σ (Sun 2025):
  Gaussian ε: 2I²;  Rademacher ε: 2I² − 2‖Lᵀu‖₄⁴;  softmax L = (I − p𝟙ᵀ)diag(√p) gives
  ‖Lᵀu‖₄⁴ = Σ_a p_a²(u_a − ū)⁴                                (:func:`output_hutchinson_variance`)
  batched over inputs: the per-input variances plus the same cross term 2[(ΣI)² − ΣI²].
* parameter-space Hutchinson z_i (Fz)_i, Rademacher z (AdaHessian, curvlinops):
  Var = Σ_{j≠i} F_ij²; for one input, F = JᵀΣJ and Var = u_iᵀΣ(JJᵀ)Σu_i − I_i²
                                                               (:func:`param_hutchinson_variance`)

The ``prove_*`` functions derive these from moments (independence, zero
means, Gaussian moments by explicit integration, Rademacher moments by the
two-point average) and return a :class:`Proof` whose ``proved`` is SymPy's
verdict (an exact zero difference or an exact limit), never a numeric spot check.

>>> batched_variance(2)
4*I_1*I_2 + v_1 + v_2
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

import sympy as sp

__all__ = [
    "Proof", "gaussian_moment", "rademacher_moment", "expectation", "score_symbols",
    "batched_variance", "output_factor", "output_hutchinson_variance", "param_hutchinson_variance",
    "param_hutchinson_variance_one_input", "estimator_variances", "estimators_latex", "estimator_facts",
    "derive_batched_variance", "prove_batched_variance", "prove_batched_variance_all_M",
    "prove_batched_sqrt2_limit", "prove_batched_sqrt2_bounded", "prove_gaussian_hutchinson",
    "prove_rademacher_hutchinson", "prove_softmax_factor", "prove_softmax_rademacher_vs_squared_score",
    "prove_param_hutchinson", "catalogue_proofs",
]


@dataclass(frozen=True)
class Proof:
    """A statement SymPy proved (or failed to prove).

    ``expression`` is the formula the statement is about; ``residual`` the
    quantity SymPy reduced to its target (0 for identities, the limit for
    limits); ``proved`` SymPy's verdict."""

    statement: str
    expression: sp.Expr
    proved: bool
    residual: sp.Expr = sp.Integer(0)
    details: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.proved


# ---------------------------------------------------------------------------- moments
@cache
def gaussian_moment(k: int) -> sp.Integer:
    """E ε^k for ε ~ N(0, 1), by explicit integration against the standard normal density.

    >>> [gaussian_moment(k) for k in range(5)]
    [1, 0, 1, 0, 3]
    """
    x = sp.Symbol("x", real=True)
    return sp.integrate(x ** k * sp.exp(-x ** 2 / 2) / sp.sqrt(2 * sp.pi), (x, -sp.oo, sp.oo))


def rademacher_moment(k: int) -> sp.Integer:
    """E ε^k for ε uniform on {−1, +1} (the two-point average).

    >>> [rademacher_moment(k) for k in range(5)]
    [1, 0, 1, 0, 1]
    """
    return (sp.Integer(1) ** k + sp.Integer(-1) ** k) / 2


def expectation(expr: sp.Expr, variables: Sequence[sp.Symbol],
                moment: Callable[[sp.Symbol, int], sp.Expr]) -> sp.Expr:
    """E[expr] for a polynomial in *independent* random ``variables``.

    Each monomial Π_j X_j^{k_j} is replaced by Π_j moment(X_j, k_j) (independence);
    the coefficients may contain any other symbols.

    >>> e = sp.Symbol("e"); a = sp.Symbol("a")
    >>> expectation((a * e) ** 4, [e], lambda X, k: gaussian_moment(k))
    3*a**4
    """
    poly = sp.Poly(expr, *variables)
    out = []
    for exps, coeff in poly.terms():
        term = coeff
        for X, k in zip(variables, exps):
            if k:
                term = term * moment(X, k)
        out.append(term)
    return sp.expand(sp.Add(*out))


def score_symbols(M: int) -> tuple[tuple[sp.Symbol, ...], tuple[sp.Symbol, ...], tuple[sp.Symbol, ...]]:
    """Symbols (I_1..I_M, v_1..v_M, κ₃_1..κ₃_M) of THEORY §13: I_m = E s_m² > 0, v_m = Var s_m² ≥ 0,
    κ₃_m = E s_m³ (any real)."""
    _check_M(M)
    I = tuple(sp.Symbol(f"I_{m}", positive=True) for m in range(1, M + 1))
    v = tuple(sp.Symbol(f"v_{m}", nonnegative=True) for m in range(1, M + 1))
    k3 = tuple(sp.Symbol(f"kappa3_{m}", real=True) for m in range(1, M + 1))
    return I, v, k3


def _check_M(M) -> None:
    if isinstance(M, bool) or not isinstance(M, int) or M < 1:
        raise ValueError(f"M (the number of inputs) must be a positive integer, got {M!r}")


# ---------------------------------------------------------------------------- closed forms
def batched_variance(M: int, I: Sequence[sp.Expr] | None = None, v: Sequence[sp.Expr] | None = None) -> sp.Expr:
    """Variance of one draw of the batched squared gradient (Σ_m s_m)² over M inputs (THEORY §13).

        Var (Σ_m s_m)² = Σ_m v_m + 2[(Σ_m I_m)² − Σ_m I_m²].

    ``I``, ``v`` default to the symbols of :func:`score_symbols`; pass expressions (e.g. per-input
    output-space Hutchinson variances as ``v``) to get the batched Hutchinson variance.

    >>> batched_variance(1)
    v_1
    """
    _check_M(M)
    I0, v0, _ = score_symbols(M)
    I = tuple(I0 if I is None else I)
    v = tuple(v0 if v is None else v)
    if len(I) != M or len(v) != M:
        raise ValueError(f"batched_variance: expected {M} values of I and v, got {len(I)} and {len(v)}")
    cross = sp.Add(*I) ** 2 - sp.Add(*[x ** 2 for x in I])
    return sp.Add(*v) + 2 * sp.expand(cross)


def _sigma_and_coords(family_or_sigma):
    """(Σ, family or None) for a family name/object (Σ in display coordinates, the family's
    ``display_sigma``: diag(p) − ppᵀ for the softmax) or a matrix Σ."""
    if isinstance(family_or_sigma, sp.MatrixBase):
        S = sp.Matrix(family_or_sigma)
        if S.rows != S.cols or (S - S.T) != sp.zeros(S.rows, S.cols):
            raise ValueError(f"Σ must be a symmetric square matrix, got a {S.rows}×{S.cols} matrix"
                             f"{' that is not symmetric' if S.rows == S.cols else ''}")
        return S, None
    from ..families import ExponentialFamily, get as get_family
    fam = family_or_sigma if isinstance(family_or_sigma, ExponentialFamily) else get_family(family_or_sigma)
    return fam.display_sigma(), fam


def output_factor(family_or_sigma) -> sp.Matrix:
    """The factor L with LLᵀ = Σ used by output-space Hutchinson probes ξ = Lε (THEORY §13).

    A family's closed-form factor where it has one (``sigma_factor_sym``; categorical:
    L = (I − p𝟙ᵀ) diag(√p), exact for the singular Σ = diag(p) − ppᵀ); otherwise, for one output
    L = √Σ and for anything else (a family or a symmetric matrix Σ) the Cholesky factor.

    >>> output_factor("bernoulli")
    Matrix([[sqrt(p)*sqrt(1 - p)]])
    """
    S, fam = _sigma_and_coords(family_or_sigma)
    L = fam.sigma_factor_sym() if fam is not None else None
    if L is not None:
        return L
    if S.rows == 1:
        return S.applyfunc(sp.sqrt)
    try:
        L = S.cholesky(hermitian=False)
    except ValueError as exc:
        L, why = None, str(exc)
    else:
        bad = L.has(sp.zoo, sp.nan, sp.oo) or any(e.is_real is False for e in L)
        why = "it has non-real or infinite entries (Σ is not positive semi-definite)" if bad else ""
    if why:
        raise ValueError(f"output_factor: the Cholesky factor of Σ = {S.tolist()} is unusable: {why}; pass a "
                         "positive-definite Σ or a family with a closed-form factor (categorical)")
    return L


def output_hutchinson_variance(family_or_sigma, kind: str = "gaussian",
                               u: Sequence[sp.Expr] | None = None) -> sp.Expr:
    """Variance of one output-space Hutchinson draw (uᵀLε)² with LLᵀ = Σ (THEORY §13).

        Gaussian ε:   2 (uᵀΣu)²
        Rademacher ε: 2 (uᵀΣu)² − 2‖Lᵀu‖₄⁴   (L from :func:`output_factor`)

    ``family_or_sigma``: a family (name or object; Σ in its display coordinates) or a symmetric
    SymPy matrix Σ.  ``u`` defaults to the family's direction symbols u_1..u_C.

    >>> output_hutchinson_variance("bernoulli", "rademacher")
    0
    """
    if kind not in ("gaussian", "rademacher"):
        raise ValueError(f"kind must be 'gaussian' or 'rademacher', got {kind!r}")
    S, fam = _sigma_and_coords(family_or_sigma)
    C = S.rows
    if u is None:
        u = fam.direction_sym("u") if fam is not None else \
            tuple(sp.Symbol(f"u_{a + 1}", real=True) for a in range(C))
    um = sp.Matrix(list(u))
    if um.rows != C:
        raise ValueError(f"u has {um.rows} components but Σ is {C}×{C}")
    readable = fam.output_probe_forms_sym(list(um)) if fam is not None else None
    if readable is not None:
        # the family's readable forms of uᵀΣu and ‖Lᵀu‖₄⁴ (categorical: centred, equal on the simplex)
        I, norm4 = readable
    else:
        I = (um.T * S * um)[0, 0]
        if C <= 2:
            I = sp.factor(I)
        L = fam.sigma_factor_sym() if fam is not None else None
        norm4 = sp.Add(*[c ** 4 for c in (output_factor(S) if L is None else L).T * um])
    if kind == "gaussian":
        return 2 * I ** 2
    out = 2 * I ** 2 - 2 * norm4
    return sp.factor(sp.expand(out)) if C <= 2 and fam is not None and readable is None else out


def param_hutchinson_variance(F: sp.Matrix, i: int) -> sp.Expr:
    """Variance of one parameter-space Hutchinson draw z_i (Fz)_i with Rademacher z (THEORY §13).

        Var z_i (Fz)_i = Σ_{j≠i} F_ij² = (F²)_ii − F_ii².

    >>> F = sp.Matrix([[1, 2], [2, 5]])
    >>> param_hutchinson_variance(F, 0)
    4
    """
    F = sp.Matrix(F)
    if F.rows != F.cols or not 0 <= i < F.rows:
        raise ValueError(f"F must be square and 0 <= i < {F.rows}; got a {F.rows}×{F.cols} matrix and i={i}")
    return sp.Add(*[F[i, j] ** 2 for j in range(F.cols) if j != i])


def param_hutchinson_variance_one_input(J: sp.Matrix, Sigma: sp.Matrix, i: int) -> sp.Expr:
    """Variance of one parameter-space Hutchinson draw for one input, F = JᵀΣJ (THEORY §13).

    With J the C × P Jacobian ∂h/∂θ and u_i its column i,

        Var z_i (Fz)_i = u_iᵀ Σ (J Jᵀ) Σ u_i − I_i²,  I_i = u_iᵀΣu_i;

    needs only the C × C Gram J Jᵀ."""
    J, S = sp.Matrix(J), sp.Matrix(Sigma)
    u = J[:, i]
    I = (u.T * S * u)[0, 0]
    return (u.T * S * (J * J.T) * S * u)[0, 0] - I ** 2


# ---------------------------------------------------------------------------- proofs: batched
def derive_batched_variance(M: int) -> sp.Expr:
    """E[(Σ_m s_m)⁴] − (E[(Σ_m s_m)²])² from the moments of independent s_m with E s_m = 0,
    E s_m² = I_m, E s_m³ = κ₃_m, E s_m⁴ = v_m + I_m² (THEORY §13), fully expanded."""
    I, v, k3 = score_symbols(M)
    s = sp.symbols(f"s_1:{M + 1}", real=True)
    mom = {X: (sp.Integer(1), sp.Integer(0), I[m], k3[m], v[m] + I[m] ** 2) for m, X in enumerate(s)}

    def moment(X, k):
        if k > 4:
            raise ValueError("only moments up to 4 are needed")
        return mom[X][k]

    S = sp.Add(*s)
    return sp.expand(expectation(S ** 4, s, moment) - expectation(S ** 2, s, moment) ** 2)


def prove_batched_variance(M: int, candidate: sp.Expr | None = None) -> Proof:
    """SymPy proof, for a given M, that Var (Σ_m s_m)² equals ``candidate`` (default
    :func:`batched_variance`) by expanding E[(Σ s_m)⁴] with independence and zero means (THEORY §13)."""
    formula = batched_variance(M) if candidate is None else sp.sympify(candidate)
    derived = derive_batched_variance(M)
    residual = sp.expand(derived - formula)
    return Proof(f"M = {M}: Var (sum_m s_m)^2 = sum_m v_m + 2[(sum_m I_m)^2 - sum_m I_m^2] "
                 "for independent zero-mean s_m", formula, residual == 0, residual, {"derived": derived})


def prove_batched_variance_all_M() -> Proof:
    """Proof for every M ≥ 1, by induction on M (THEORY §13).

    Let S = Σ_{m≤M} s_m with E S = 0, E S² = A, E S³ = B, E S⁴ = D and write V = Σ v_m, Q = Σ I_m².
    Base M = 1: E s⁴ − I² = v = V + 2[A² − Q].  Step: add an independent s with moments 0, I, k, v + I²:
    E(S+s)⁴ = D + 4B·0 + 6AI + 4·0·k + v + I², and E(S+s)² = A + I.  Substituting the hypothesis
    D = A² + V + 2[A² − Q], SymPy checks E(S+s)⁴ − (A+I)² = (V+v) + 2[(A+I)² − (Q+I²)]."""
    A, Q, I = sp.symbols("A Q I", positive=True)
    V, v = sp.symbols("V v", nonnegative=True)
    B, k = sp.symbols("B k", real=True)
    S, s = sp.symbols("S s", real=True)
    claim = lambda V_, A_, Q_: V_ + 2 * (A_ ** 2 - Q_)  # noqa: E731
    base = sp.expand((v + I ** 2) - I ** 2 - claim(v, I, I ** 2))
    D = A ** 2 + claim(V, A, Q)
    momS = {0: 1, 1: 0, 2: A, 3: B, 4: D}
    moms = {0: 1, 1: 0, 2: I, 3: k, 4: v + I ** 2}
    mom = lambda X, n: (momS if X == S else moms)[n]  # noqa: E731
    E2 = expectation((S + s) ** 2, [S, s], mom)
    E4 = expectation((S + s) ** 4, [S, s], mom)
    step = sp.expand(E4 - E2 ** 2 - claim(V + v, E2, Q + I ** 2))
    ok = base == 0 and step == 0 and sp.expand(E2 - (A + I)) == 0
    return Proof("for every M >= 1: Var (sum_m s_m)^2 = sum_m v_m + 2[(sum_m I_m)^2 - sum_m I_m^2] "
                 "(induction on M)", claim(V, A, Q), ok, step, {"base": base, "step": step})


def prove_batched_sqrt2_limit() -> Proof:
    """M identical inputs (I_m = I > 0, v_m = v ≥ 0): the relative s.d. of (Σ s_m)² is
    √(Mv + 2M(M−1)I²)/(MI) → √2 as M → ∞ (THEORY §13; ``sp.limit``)."""
    M = sp.Symbol("M", positive=True, integer=True)
    I = sp.Symbol("I", positive=True)
    v = sp.Symbol("v", nonnegative=True)
    # the general formula with every I_m = I, v_m = v: Σv = Mv, (ΣI)² − ΣI² = M²I² − MI²
    var = M * v + 2 * (M ** 2 * I ** 2 - M * I ** 2)
    # … and it is batched_variance at identical inputs for small M (ties this to the proven formula)
    Is, vs, _ = score_symbols(4)
    same = sp.expand(batched_variance(4).xreplace({**{x: I for x in Is}, **{x: v for x in vs}})
                     - var.subs(M, 4)) == 0
    rel = sp.sqrt(var) / (M * I)
    lim = sp.limit(rel, M, sp.oo)
    return Proof("identical inputs: sqrt(Var)/(M I) -> sqrt(2) as M -> oo", rel,
                 bool(same and sp.simplify(lim - sp.sqrt(2)) == 0), lim, {"variance": var})


def prove_batched_sqrt2_bounded() -> Proof:
    """Prove Var/(Σ_m I_m)² of the batched squared gradient → 2 at rate O(1/M), with a bound (THEORY §13).

    General statement: if 0 ≤ v_m ≤ V̄ and c ≤ I_m ≤ Ī with c > 0 for every m, then

        |Var/(Σ_m I_m)² − 2| ≤ (V̄ + 2Ī²)/(M c²),

    hence the relative s.d. √Var/Σ_m I_m → √2 as M → ∞, at rate O(1/M).

    Steps SymPy checks: (i) Var/(ΣI)² − 2 = (Σv − 2ΣI²)/(ΣI)² exactly; (ii) the numerator lies in
    the box Σv ∈ [0, MV̄], ΣI² ∈ [0, MĪ²] and, being linear there, is bounded by its values at the
    corners, each of absolute value ≤ M(V̄ + 2Ī²); (iii) ΣI = Mc + t with t ≥ 0, so
    1/(ΣI)² ≤ 1/(Mc)²; (iv) the bound → 0 and |√r − √2| = |r − 2|/(√r + √2) ≤ |r − 2|/√2."""
    M, c, Vb, Ib = sp.symbols("M c Vbar Ibar", positive=True)
    Sv, Sq, A, t = sp.symbols("S_v S_q A t", nonnegative=True)
    var = Sv + 2 * (A ** 2 - Sq)                     # the formula in its sums
    ident = sp.simplify(var / A ** 2 - 2 - (Sv - 2 * Sq) / A ** 2) == 0
    num = Sv - 2 * Sq
    bound_num = M * (Vb + 2 * Ib ** 2)
    corners = [num.subs({Sv: a, Sq: b}) for a in (0, M * Vb) for b in (0, M * Ib ** 2)]
    box = all(sp.expand(bound_num - x).is_nonnegative and sp.expand(bound_num + x).is_nonnegative
              for x in corners)
    denom = sp.expand((M * c + t) ** 2 - (M * c) ** 2).is_nonnegative
    B = bound_num / (M * c) ** 2
    lim = sp.limit(B, M, sp.oo)
    ok = bool(ident and box and denom and lim == 0)
    return Proof("0 <= v_m <= Vbar, 0 < c <= I_m <= Ibar  =>  |Var/(sum I)^2 - 2| <= (Vbar + 2 Ibar^2)/(M c^2) "
                 "-> 0, so the relative s.d. -> sqrt(2)", sp.simplify(B), ok, lim,
                 {"identity": ident, "corners": box, "denominator": denom})


# ---------------------------------------------------------------------------- proofs: output-space Hutchinson
def _lower_triangular(C: int) -> sp.Matrix:
    return sp.Matrix(C, C, lambda a, b: sp.Symbol(f"l_{a + 1}{b + 1}", real=True) if b <= a else 0)


def _hutchinson_moments(C: int, moment_fn: Callable[[int], sp.Expr]):
    """(E s⁴ − (E s²)², I, Lᵀu, E s² − I, I − ‖Lᵀu‖²) for s = uᵀLε with i.i.d. ε_a of the given moments.

    s = cᵀε with c = Lᵀu; the moments are expanded in the C symbols c_b (exact), and SymPy checks
    uᵀLε = cᵀε and I = uᵀLLᵀu = Σ_b c_b² for the general lower-triangular L separately (the last
    entry is 0 when both hold)."""
    L = _lower_triangular(C)
    u = sp.Matrix(sp.symbols(f"u_1:{C + 1}", real=True))
    c = sp.symbols(f"c_1:{C + 1}", real=True)
    eps = sp.symbols(f"epsilon_1:{C + 1}", real=True)
    s = sp.Add(*[cb * eb for cb, eb in zip(c, eps)])
    E2 = expectation(s ** 2, eps, lambda X, k: moment_fn(k))
    E4 = expectation(s ** 4, eps, lambda X, k: moment_fn(k))
    I = sp.Add(*[cb ** 2 for cb in c])
    Ltu = L.T * u
    gap_s = sp.expand((u.T * L * sp.Matrix(eps))[0, 0] - s.xreplace(dict(zip(c, Ltu))))   # uᵀLε = cᵀε
    gap_I = sp.expand((u.T * L * L.T * u)[0, 0] - I.xreplace(dict(zip(c, Ltu)))) + gap_s ** 2
    return sp.expand(E4 - E2 ** 2), I, sp.Matrix(c), sp.expand(E2 - I), gap_I


def prove_gaussian_hutchinson(C: int) -> Proof:
    """For ε ~ N(0, I_C) and a general lower-triangular L (C(C+1)/2 symbols), s = uᵀLε:
    E s² = uᵀΣu = I and E s⁴ − I² = 2I² with Σ = LLᵀ (THEORY §13); Gaussian moments E ε^k by
    explicit integration (:func:`gaussian_moment`)."""
    var, I, _, mean_gap, gap_I = _hutchinson_moments(C, gaussian_moment)
    formula = 2 * I ** 2
    residual = sp.expand(var - formula)
    return Proof(f"C = {C}, Gaussian probes: Var (u^T L eps)^2 = 2 (u^T L L^T u)^2", formula,
                 residual == 0 and mean_gap == 0 and gap_I == 0, residual)


def prove_rademacher_hutchinson(C: int) -> Proof:
    """As :func:`prove_gaussian_hutchinson` with Rademacher ε (E ε⁴ = 1):
    E s⁴ − I² = 2I² − 2‖Lᵀu‖₄⁴ (THEORY §13)."""
    var, I, Ltu, mean_gap, gap_I = _hutchinson_moments(C, rademacher_moment)
    formula = 2 * I ** 2 - 2 * sp.Add(*[x ** 4 for x in Ltu])
    residual = sp.expand(var - formula)
    return Proof(f"C = {C}, Rademacher probes: Var (u^T L eps)^2 = 2 I^2 - 2 ||L^T u||_4^4 (c = L^T u)", formula,
                 residual == 0 and mean_gap == 0 and gap_I == 0, residual)


def prove_softmax_factor(C: int) -> Proof:
    """Softmax factor L = (I − p𝟙ᵀ)diag(√p) with p on the simplex (THEORY §13, §4):
    LLᵀ = diag(p) − ppᵀ, which is the categorical family's Σ = ∇²F (display coordinates), and
    ‖Lᵀu‖₄⁴ = Σ_a p_a²(u_a − ū)⁴ with ū = Σ_a p_a u_a."""
    from ..families import Categorical
    if isinstance(C, bool) or not isinstance(C, int) or C < 2:
        raise ValueError(f"C must be an integer >= 2 (softmax classes), got {C!r}")
    fam = Categorical(C=C)
    p = fam.p_sym
    L = output_factor(fam)
    u = sp.Matrix(fam.direction_sym("u"))
    simplex = {p[-1]: 1 - sp.Add(*p[:-1])}
    target = sp.diag(*p) - sp.Matrix(p) * sp.Matrix(p).T
    gap_S = (L * L.T - target).applyfunc(lambda e: sp.expand(e.xreplace(simplex)))
    gap_F = (fam.display(fam.sigma_sym) - target).applyfunc(lambda e: sp.expand(e.xreplace(simplex)))
    ubar = sp.Add(*[pa * ua for pa, ua in zip(p, u)])
    centred = sp.Add(*[pa ** 2 * (ua - ubar) ** 4 for pa, ua in zip(p, u)])
    norm4 = sp.Add(*[x ** 4 for x in L.T * u])
    residual = sp.expand(norm4 - centred)
    ok = gap_S.is_zero_matrix and gap_F.is_zero_matrix and residual == 0
    return Proof(f"C = {C}: L L^T = diag(p) - p p^T (= the softmax Sigma) and "
                 "||L^T u||_4^4 = sum_a p_a^2 (u_a - ubar)^4", centred, bool(ok), residual,
                 {"LLt_gap": gap_S, "family_gap": gap_F})


def prove_softmax_rademacher_vs_squared_score(C: int) -> Proof:
    """Prove when Rademacher output-space Hutchinson beats Î₁ for the softmax (THEORY §13).

    One input, one label or one probe; with d_a = u_a − ū,

        v − Var_Rad = Σ_a p_a(1 + 2p_a) d_a⁴ − 3I²,

    so Rademacher output-space Hutchinson beats Î₁ iff Σ_a p_a(1 + 2p_a)d_a⁴ > 3I².  Here v = Var s_y²
    is derived independently by summing over the C labels y (s_y = u_y − ū, probability p_y)."""
    from ..families import Categorical
    if isinstance(C, bool) or not isinstance(C, int) or C < 2:
        raise ValueError(f"C must be an integer >= 2 (softmax classes), got {C!r}")
    fam = Categorical(C=C)
    p, u = fam.p_sym, fam.direction_sym("u")
    ubar = sp.Add(*[pa * ua for pa, ua in zip(p, u)])
    d = [ua - ubar for ua in u]
    simplex = {p[-1]: 1 - sp.Add(*p[:-1])}
    I = sp.Add(*[pa * da ** 2 for pa, da in zip(p, d)])          # E s_y² over the labels
    v = sp.Add(*[pa * da ** 4 for pa, da in zip(p, d)]) - I ** 2  # Var s_y² over the labels
    gap_I = sp.expand((I - (sp.Matrix([u]) * (sp.diag(*p) - sp.Matrix(p) * sp.Matrix(p).T) * sp.Matrix(u))[0, 0])
                      .xreplace(simplex))
    rad = output_hutchinson_variance(fam, "rademacher")
    claim = sp.Add(*[pa * (1 + 2 * pa) * da ** 4 for pa, da in zip(p, d)]) - 3 * I ** 2
    residual = sp.expand((v - rad - claim).xreplace(simplex))
    return Proof(f"C = {C}: Var(s^2) - Var_Rad = sum_a p_a (1 + 2 p_a) d_a^4 - 3 I^2", claim,
                 residual == 0 and gap_I == 0, residual)


# ---------------------------------------------------------------------------- proofs: parameter-space Hutchinson
def prove_param_hutchinson(P: int, C: int = 2) -> Proof:
    """For a symmetric P × P matrix F of symbols and Rademacher z: E z_i(Fz)_i = F_ii and
    Var z_i(Fz)_i = Σ_{j≠i} F_ij² for every i; and for F = JᵀΣJ (J a C × P matrix of symbols, Σ a
    symmetric C × C one) this equals u_iᵀΣ(JJᵀ)Σu_i − I_i² (THEORY §13)."""
    F = sp.Matrix(P, P, lambda i, j: sp.Symbol(f"F_{min(i, j) + 1}{max(i, j) + 1}", real=True))
    z = sp.symbols(f"z_1:{P + 1}", real=True)
    Fz = F * sp.Matrix(z)
    res, gaps = [], []
    for i in range(P):
        est = z[i] * Fz[i]
        m1 = expectation(est, z, lambda X, k: rademacher_moment(k))
        m2 = expectation(est ** 2, z, lambda X, k: rademacher_moment(k))
        gaps.append(sp.expand(m1 - F[i, i]))
        res.append(sp.expand(m2 - m1 ** 2 - param_hutchinson_variance(F, i)))
    J = sp.Matrix(C, P, lambda a, j: sp.Symbol(f"J_{a + 1}{j + 1}", real=True))
    S = sp.Matrix(C, C, lambda a, b: sp.Symbol(f"Sigma_{min(a, b) + 1}{max(a, b) + 1}", real=True))
    FJ = J.T * S * J
    one = [sp.expand(param_hutchinson_variance(FJ, i) - param_hutchinson_variance_one_input(J, S, i))
           for i in range(P)]
    ok = all(g == 0 for g in gaps + res + one)
    return Proof(f"P = {P}: Var z_i (F z)_i = sum_(j != i) F_ij^2 (Rademacher z), = u_i^T S J J^T S u_i - I_i^2 "
                 f"for F = J^T S J (C = {C})", param_hutchinson_variance(F, 0), ok,
                 sp.Add(*[e ** 2 for e in res + gaps + one]),
                 {"unbiased": all(g == 0 for g in gaps)})


# ---------------------------------------------------------------------------- LaTeX (the catalogue)
def _gaussian_wins_condition(D):
    """For one-output families: κ₄(u)/(u⁴) > 0 solved in the display coordinate (None if not univariate)."""
    F = D.forms
    if D.family.C != 1 or not F.coords:
        return None
    (coord, _), = F.coords
    (u,) = F.U
    core = sp.factor(F.kappa4 / u ** 4)
    if core.free_symbols != {coord}:
        return None
    dom = D.family.display_domain().get(coord, sp.S.Reals)
    try:
        sol = sp.solve_univariate_inequality(core > 0, coord, relational=False, domain=dom)
    except (NotImplementedError, ValueError):  # pragma: no cover - SymPy could not solve it
        return None
    return core, coord, sol


def estimator_variances(D, u: dict | None = None) -> dict[sp.Symbol, dict[str, sp.Expr]]:
    """Per parameter θ_i of derivation ``D``, one input, one draw (THEORY §13):
    ``fisher`` I = u_iᵀΣu_i, ``v`` = N·V₁ (Î₁ with one label), ``gaussian`` / ``rademacher`` the
    output-space Hutchinson variances and ``param`` the parameter-space Hutchinson variance
    Σ_{j≠i} F_ij² with F = JᵀΣJ over all of D's parameters.  ``u`` maps each parameter symbol to
    its u_i (default: the derivation's; the LaTeX passes CSE-reduced ones)."""
    F = D.forms
    u = {pd.symbol: tuple(pd.u) for pd in D} if u is None else u
    syms = [pd.symbol for pd in D]
    J = sp.Matrix(D.family.C, len(syms), lambda a, j: u[syms[j]][a])
    fisher = F.readable.get("fisher", F.fisher) if F.readable else F.fisher
    var1 = F.readable.get("var1", F.var1) if F.readable else F.var1
    hg = output_hutchinson_variance(D.family, "gaussian", u=F.U)
    hr = output_hutchinson_variance(D.family, "rademacher", u=F.U)
    out = {}
    for j, s in enumerate(syms):
        sub = dict(zip(F.U, u[s]))
        out[s] = {"fisher": fisher.xreplace(sub), "v": var1.xreplace(sub), "gaussian": hg.xreplace(sub),
                  "rademacher": hr.xreplace(sub),
                  "param": sp.factor(param_hutchinson_variance_one_input(J, F.sigma, j))}
    return out


@cache
def catalogue_proofs() -> dict[str, tuple[Proof, ...]]:
    """Every proof of this module, as the catalogue documents cite them (THEORY §13); computed once
    per process (seconds on one core).  Keys: batched (M = 2, 3, 4 and every M), limit, bounded,
    hutchinson (Gaussian and Rademacher, C = 2, 3), softmax (the factor and the comparison with Î₁,
    C = 2, 3), param (P = 3)."""
    return {
        "batched": tuple(prove_batched_variance(k) for k in (2, 3, 4)) + (prove_batched_variance_all_M(),),
        "limit": (prove_batched_sqrt2_limit(),), "bounded": (prove_batched_sqrt2_bounded(),),
        "hutchinson": tuple(prove_gaussian_hutchinson(k) for k in (2, 3))
        + tuple(prove_rademacher_hutchinson(k) for k in (2, 3)),
        "softmax": tuple(prove_softmax_factor(k) for k in (2, 3))
        + tuple(prove_softmax_rademacher_vs_squared_score(k) for k in (2, 3)),
        "param": (prove_param_hutchinson(3),),
    }


def estimators_latex(D, title: str, derivation_file: str | None = None) -> str:
    """Standalone LaTeX document: the variances of the batched squared gradient, the output-space
    Hutchinson (Gaussian, Rademacher) and the parameter-space Hutchinson estimators for the network
    and family of derivation ``D`` (THEORY §13), per parameter, with the statements proven by SymPy.

    Uses the derivation's printer, CSE and family forms (:mod:`fishersym.symbolic.latex`);
    deterministic, so the committed catalogue is compared with fresh output."""
    from .latex import _eq, _Printer, _vec, document_head, tex_escape

    P = _Printer(D)
    fam, F = D.family, D.forms
    C = fam.C
    out: list[str] = []
    w = out.append
    w(document_head(title))
    ref = (f" The network, $u_i = \\partial h/\\partial\\theta_i$, $I$ and $V_1$ are derived step by step in "
           f"\\texttt{{{tex_escape(derivation_file)}}}.") if derivation_file else ""
    w("Variances of one draw of the Fisher-diagonal estimators practitioners use (THEORY \\S13, "
      "\\texttt{docs/theory}), generated by SymPy (\\texttt{fishersym.symbolic.estimators}). "
      "For input $x_m$ and parameter $\\theta_i$: "
      "$s_m = u_m^\\top r_m$ is the score for one sampled label, $I_m = u_m^\\top\\Sigma_m u_m = E s_m^2$ and "
      "$v_m = \\operatorname{Var} s_m^2 = N V_1(\\theta_i|x_m)$ (\\S8). Every estimator targets $\\sum_m I_m$."
      + ref + "\n\n")

    # ------------------------------------------------------------ general results
    w("\\section{General results proven by SymPy}\n")
    M = 3
    w("\\paragraph{Batched squared gradient $(\\sum_m s_m)^2$} (EWC ``batched'', Sophia-GNB). Independent "
      "inputs, $E s_m = 0$. Expanding $E[(\\sum_m s_m)^4]$ with $E s_m^4 = v_m + I_m^2$ gives, for every "
      "$M \\ge 1$,\n")
    w(_eq(r"\operatorname{Var}\Big(\sum_m s_m\Big)^2",
          r"\sum_{m} v_m + 2\Big[\Big(\sum_m I_m\Big)^2 - \sum_m I_m^2\Big]"))
    proofs = catalogue_proofs()
    pr = proofs["batched"]
    w(f"(proven by expansion for $M = 2, 3, 4$ and by induction on $M$: "
      f"{'all proved' if all(pr) else 'NOT PROVED'}). For $M = {M}$:\n")
    w(_eq(r"\operatorname{Var}(s_1 + s_2 + s_3)^2", P(batched_variance(M))))
    (lim,) = proofs["limit"]
    Msym = sp.Symbol("M", positive=True, integer=True)
    w("Its relative standard deviation does not shrink with the batch. For $M$ identical inputs "
      f"({'proved' if lim else 'NOT PROVED'}):\n")
    w(_eq(r"\frac{\sqrt{\operatorname{Var}}}{M I}", P(lim.expression) + r" \xrightarrow{M\to\infty} "
          + P(lim.residual)))
    (bd,) = proofs["bounded"]
    w("More generally, if $0 \\le v_m \\le \\bar V$ and $0 < c \\le I_m \\le \\bar I$ for every $m$ "
      f"({'proved' if bd else 'NOT PROVED'}):\n")
    w(_eq(r"\left|\frac{\operatorname{Var}}{(\sum_m I_m)^2} - 2\right|",
          r"\left|\frac{\sum_m v_m - 2\sum_m I_m^2}{(\sum_m I_m)^2}\right| \le " + P(bd.expression)
          + r" \xrightarrow{M\to\infty} 0"))
    w("so $\\sqrt{\\operatorname{Var}}/\\sum_m I_m \\to \\sqrt 2$ at rate $O(1/M)$, whatever the per-input "
      "variances.\n\n")
    phut, psm = proofs["hutchinson"], proofs["softmax"]
    w("\\paragraph{Output-space Hutchinson $(u^\\top L\\varepsilon)^2$, $LL^\\top = \\Sigma$} (Sun 2025). "
      "With $E\\varepsilon_a^4 = 3$ (Gaussian, by integration) or $1$ (Rademacher) and a general "
      "lower-triangular $L$ ($C = 2, 3$; "
      f"{'proved' if all(phut) else 'NOT PROVED'}):\n")
    w(_eq(r"\operatorname{Var}_{\mathrm{Gauss}}", r"2 (u^\top\Sigma u)^2"))
    w(_eq(r"\operatorname{Var}_{\mathrm{Rad}}", r"2 (u^\top\Sigma u)^2 - 2\|L^\top u\|_4^4"))
    w("For the softmax, $L = (I - p\\mathbf 1^\\top)\\operatorname{diag}(\\sqrt p)$ satisfies "
      "$LL^\\top = \\operatorname{diag}(p) - pp^\\top$ and $\\|L^\\top u\\|_4^4 = \\sum_a p_a^2 (u_a - \\bar u)^4$, "
      f"$\\bar u = \\sum_a p_a u_a$ ($C = 2, 3$; {'proved' if all(psm) else 'NOT PROVED'}). "
      "Batched over inputs, $(\\sum_m u_m^\\top L_m\\varepsilon_m)^2$ has the per-input variances plus the "
      "same cross term $2[(\\sum_m I_m)^2 - \\sum_m I_m^2]$ (the batched result with "
      "$s_m = u_m^\\top L_m\\varepsilon_m$). "
      "For the softmax, with $d_a = u_a - \\bar u$, Rademacher probes beat $\\hat I_1$ with one label iff "
      "$\\sum_a p_a(1 + 2p_a) d_a^4 > 3 I^2$ (the difference of the variances; proved for $C = 2, 3$).\n\n")
    (ph,) = proofs["param"]
    w("\\paragraph{Parameter-space Hutchinson $z_i (F z)_i$, Rademacher $z$} (AdaHessian, curvlinops). "
      f"Unbiased, with ({'proved' if ph else 'NOT PROVED'} for $P = 3$)\n")
    w(_eq(r"\operatorname{Var} z_i (Fz)_i", r"\sum_{j \ne i} F_{ij}^2 = (F^2)_{ii} - F_{ii}^2"))
    w("For one input $F = J^\\top\\Sigma J$, so "
      "$\\operatorname{Var} = u_i^\\top\\Sigma (JJ^\\top)\\Sigma u_i - I_i^2$: "
      "only the $C\\times C$ Gram $JJ^\\top = \\sum_j u_j u_j^\\top$ is needed.\n\n")

    # ------------------------------------------------------------ family level
    w(f"\\section{{Family \\texttt{{{tex_escape(fam.name)}}}: per direction $u$}}\n")
    U = F.U
    uvec = P(sp.Matrix(U).T) if C > 1 else P(U[0])
    S = F.sigma if C > 1 else F.sigma[0, 0]
    L = output_factor(fam)
    w(f"For a direction $u = {uvec}$, with $\\Sigma = {P(S)}$ and the factor $L = "
      f"{P(L if C > 1 else L[0, 0])}$:\n")
    fisher = F.readable.get("fisher", F.fisher) if F.readable else F.fisher
    var1 = F.readable.get("var1", F.var1) if F.readable else F.var1
    hg = output_hutchinson_variance(fam, "gaussian", u=U)
    hr = output_hutchinson_variance(fam, "rademacher", u=U)
    w(_eq(r"I = u^\top\Sigma u", P(fisher)))
    w(_eq(r"v = N V_1 = \kappa_4(u,u,u,u) + 2I^2", P(var1)))
    w(_eq(r"\operatorname{Var}_{\mathrm{Gauss}} = 2I^2", P(hg)))
    w(_eq(r"\operatorname{Var}_{\mathrm{Rad}} = 2I^2 - 2\|L^\top u\|_4^4", P(hr)))
    if C == 1 and hr == 0:
        w("With one output, $(uL\\varepsilon)^2 = u^2 L^2 = I$ for $\\varepsilon = \\pm 1$: the Rademacher "
          "output-space Hutchinson estimator is exact (zero variance), at the cost of one backward pass.\n\n")
    w("Gaussian output-space Hutchinson beats $\\hat I_1$ with one label ($v$) exactly where "
      "$\\kappa_4(u,u,u,u) > 0$, since $v - 2I^2 = \\kappa_4$")
    cond = _gaussian_wins_condition(D)
    if cond is not None:
        core, coord, sol = cond
        w(f"; here $\\kappa_4/u^4 = {P(core)}$, positive for ${P(coord)} \\in {P(sol)}$")
    w(".\n")
    ratio = sp.factor(sp.cancel(var1 / fisher ** 2))
    if not (ratio.free_symbols & set(U)):
        rel = sp.sqrt(ratio / Msym + 2 * (Msym - 1) / Msym)
        w("Here $v/I^2$ does not depend on $u$, so for $M$ copies of one input the batched estimator has, for "
          "every parameter,\n")
        w(_eq(r"\frac{v}{I^2}", P(ratio)))
        w(_eq(r"\frac{\sqrt{\operatorname{Var}}}{M I}", P(rel) + r" \xrightarrow{M\to\infty} "
              + P(sp.limit(rel, Msym, sp.oo))))

    # ------------------------------------------------------------ per parameter
    repl, red = D.cse(which=("u",))
    w("\\section{Per parameter, one input}\n")
    w("Common subexpressions of the $u_i$ (SymPy's CSE) are named $\\xi_n$:\n")
    if repl:
        w("\\begin{align*}\n" + " \\\\\n".join(f"{P(s)} &= {P(e)}" for s, e in repl) + "\n\\end{align*}\n")
    else:
        w("(none).\n\n")
    P.names.update({s: f"\\xi_{{{s.name.split('_')[1]}}}" for s, _ in repl})
    ured = {pd.symbol: tuple(red[pd.symbol]["u"]) for pd in D}
    J = sp.Matrix(C, len(D), lambda a, j: ured[list(ured)[j]][a])
    G = (J * J.T).applyfunc(sp.factor)
    w("The Gram matrix of the Jacobian over all parameters (for parameter-space Hutchinson):\n")
    w(_eq(r"J J^\top = \sum_j u_j u_j^\top", P(G if C > 1 else G[0, 0])))
    for pd, vals in zip(D, estimator_variances(D, ured).values()):
        s = pd.symbol
        w(f"\\subsection{{${P(s)}$ (\\texttt{{{tex_escape(pd.entry.label)}}})}}\n")
        w(_eq(f"u_{{{P(s)}}}", _vec(P, ured[s])))
        w(_eq(f"I({P(s)}|x)", P(vals["fisher"])))
        w(_eq("v = N V_1", P(vals["v"])))
        w(_eq(r"\operatorname{Var}_{\mathrm{Gauss}}", P(vals["gaussian"])))
        w(_eq(r"\operatorname{Var}_{\mathrm{Rad}}", P(vals["rademacher"])))
        w(_eq(r"\operatorname{Var}_{\mathrm{param}} = \sum_{k\ne i} F_{ik}^2", P(vals["param"])))
    w("\\section{Many inputs}\n")
    w("For $M$ inputs, the per-input quantities above at $x_m$ give $I_m$, $v_m$; the batched squared gradient "
      "and the batched output-space Hutchinson estimators add $2[(\\sum_m I_m)^2 - \\sum_m I_m^2]$ to the sum of "
      "the per-input variances ($v_m$, resp.\\ $\\operatorname{Var}_{\\mathrm{Gauss}}$ or "
      "$\\operatorname{Var}_{\\mathrm{Rad}}$), and the per-sample squares $\\sum_m s_m^2$ ($\\hat I_1$) have "
      "variance $\\sum_m v_m$. Parameter-space Hutchinson on the summed $F = \\sum_m J_m^\\top\\Sigma_m J_m$ has "
      "variance $\\sum_{k\\ne i}F_{ik}^2$, which needs the cross-input Grams $J_m J_n^\\top$.\n")
    w("\\end{document}\n")
    return "".join(out)


def estimator_facts(D) -> list[str]:
    """One-line facts for the catalogue index (what SymPy proved for this case; THEORY §13)."""
    fam = D.family
    facts = ["Var (Σ_m s_m)² = Σv_m + 2[(ΣI_m)² − ΣI_m²] proven for every M (induction), relative s.d. → √2"]
    hr = output_hutchinson_variance(fam, "rademacher", u=D.forms.U)
    if hr == 0:
        facts.append("output-space Hutchinson: Gaussian 2I², Rademacher 0 (exact with one output)")
    else:
        facts.append("output-space Hutchinson: Gaussian 2I², Rademacher 2I² − 2‖Lᵀu‖₄⁴")
    facts.append(f"parameter-space Hutchinson Σ_(j≠i) F_ij² per parameter for all {len(D)} parameters")
    return facts
