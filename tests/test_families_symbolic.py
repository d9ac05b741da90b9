"""Symbolic cumulants derived from F equal the definitional moments (THEORY §1, §3, §4).

Independent computations: exact sums over the support (Bernoulli,
categorical), SymPy's infinite summation of the Poisson pmf, and SymPy
integrals against the Gaussian density.  No expression is compared with
itself: the left side comes from differentiating F, the right side from
E[t], E[r rᵀ], E[r⊗r⊗r⊗r] under p(y|h).
"""
import itertools

import pytest
import sympy as sp

from fishersym import families


def _check_moments(fam, expect_t, expect_rr, expect_r4, point):
    """Compare η, Σ, M₄ with the definitional moments at a symbolic/numeric point."""
    C = fam.C
    eta = [sp.simplify((fam.eta_sym[a] - expect_t[a]).subs(point)) for a in range(C)]
    assert all(e == 0 for e in eta), eta
    for a, b in itertools.product(range(C), repeat=2):
        assert sp.simplify((fam.sigma_sym[a, b] - expect_rr(a, b)).subs(point)) == 0, (a, b)
    for idx in itertools.product(range(C), repeat=4):
        assert sp.simplify((fam.m4_sym[idx] - expect_r4(*idx)).subs(point)) == 0, idx


def _support_moments(fam, support):
    """Exact E[t], E[r_a r_b], E[r_a r_b r_c r_d] over a finite support [(t, π(t))]."""
    h = fam.h_sym
    F = fam.F_sym
    weights = [pi * sp.exp(sum(ti * hi for ti, hi in zip(t, h)) - F) for t, pi in support]
    total = sp.simplify(sum(weights))
    assert total == 1
    eta = [sp.simplify(sum(w * t[a] for (t, _), w in zip(support, weights))) for a in range(fam.C)]
    r = lambda t, a: t[a] - eta[a]  # noqa: E731
    rr = lambda a, b: sum(w * r(t, a) * r(t, b) for (t, _), w in zip(support, weights))  # noqa: E731
    r4 = lambda a, b, c, d: sum(w * r(t, a) * r(t, b) * r(t, c) * r(t, d)  # noqa: E731
                                for (t, _), w in zip(support, weights))
    return eta, rr, r4


def test_bernoulli_cumulants_equal_support_sums():
    fam = families.get("bernoulli")
    eta, rr, r4 = _support_moments(fam, [((0,), 1), ((1,), 1)])
    _check_moments(fam, eta, rr, r4, {})


@pytest.mark.parametrize("C", [2, 3])
def test_categorical_cumulants_equal_support_sums(C):
    fam = families.get("categorical", C=C)
    support = [(tuple(int(a == y) for a in range(C)), 1) for y in range(C)]
    eta, rr, r4 = _support_moments(fam, support)
    _check_moments(fam, eta, rr, r4, {})


def test_poisson_cumulants_equal_infinite_sums():
    fam = families.get("poisson", C=1)
    (h,) = fam.h_sym
    y = sp.Symbol("y", integer=True, nonnegative=True)
    lam = sp.Symbol("lambda", positive=True)
    pmf = sp.exp(-lam) * lam ** y / sp.factorial(y)
    E = lambda f: sp.simplify(sp.summation(sp.expand(f) * pmf, (y, 0, sp.oo)))  # noqa: E731
    mean = E(y)
    assert sp.simplify(E(1) - 1) == 0
    _check_moments(fam, [mean], lambda a, b: E((y - mean) ** 2), lambda *i: E((y - mean) ** 4),
                   {h: sp.log(lam)})


def test_poisson_two_outputs_fourth_moment_is_independent_product():
    """C = 2: components independent, so M₄_1122 = λ₁λ₂ and κ₄ is diagonal."""
    fam = families.get("poisson", C=2)
    l1, l2 = [sp.exp(h) for h in fam.h_sym]
    assert sp.simplify(fam.m4_sym[0, 0, 1, 1] - l1 * l2) == 0
    assert sp.simplify(fam.m4_sym[0, 0, 0, 0] - (l1 + 3 * l1 ** 2)) == 0
    assert sp.simplify(fam.kappa4_sym[0, 0, 1, 1]) == 0


def test_gaussian_cumulants_equal_integrals():
    fam = families.get("gaussian", C=1, sigma2=1.0)
    (h,) = fam.h_sym
    s2 = next(iter(fam.sym_params))
    y = sp.Symbol("y", real=True)
    mu = s2 * h  # mean of the density p(y|h) = N(σ²h, σ²), written from its definition
    dens = sp.exp(-(y - mu) ** 2 / (2 * s2)) / sp.sqrt(2 * sp.pi * s2)
    E = lambda f: sp.simplify(sp.integrate(f * dens, (y, -sp.oo, sp.oo)))  # noqa: E731
    assert E(1) == 1
    m = E(y)
    _check_moments(fam, [m], lambda a, b: E((y - m) ** 2), lambda *i: E((y - m) ** 4), {})


def test_gaussian_meanvar_cumulants_equal_integrals():
    fam = families.get("gaussian_meanvar")
    h1, h2 = fam.h_sym
    mu, sig = sp.Symbol("mu", real=True), sp.Symbol("sigma", positive=True)
    point = {h1: mu / sig ** 2, h2: -1 / (2 * sig ** 2)}
    y = sp.Symbol("y", real=True)
    dens = sp.exp(-(y - mu) ** 2 / (2 * sig ** 2)) / sp.sqrt(2 * sp.pi * sig ** 2)
    # raw moments E[y^k], k ≤ 8, by integration; polynomials in y are expanded through them
    raw = [sp.simplify(sp.integrate(y ** k * dens, (y, -sp.oo, sp.oo))) for k in range(9)]
    assert raw[0] == 1

    def E(f):
        poly = sp.Poly(sp.expand(f), y)
        return sp.simplify(sum(c * raw[k] for (k,), c in poly.terms()))
    t = [y, y ** 2]
    eta = [E(ti) for ti in t]
    r = [t[a] - eta[a] for a in range(2)]
    _check_moments(fam, eta, lambda a, b: E(r[a] * r[b]), lambda a, b, c, d: E(r[a] * r[b] * r[c] * r[d]),
                   point)


def test_mbar_is_covariance_of_rr_and_M_contracts_to_NV1():
    """M̄ = Cov[vec(r rᵀ)] (THEORY §3) — checked by exact support sums for C = 3."""
    fam = families.get("categorical", C=3)
    C = fam.C
    support = [tuple(int(a == y) for a in range(C)) for y in range(C)]
    p = [sp.exp(h) / sum(sp.exp(g) for g in fam.h_sym) for h in fam.h_sym]
    point = {fam.h_sym[0]: sp.Rational(1, 3), fam.h_sym[1]: -sp.Rational(1, 2), fam.h_sym[2]: sp.Rational(2, 1)}
    pv = [sp.nsimplify(pi.subs(point)) for pi in p]
    r = [[t[a] - pv[a] for a in range(C)] for t in support]
    vecs = [[ri[a] * ri[b] for a in range(C) for b in range(C)] for ri in r]
    mean = [sum(pv[y] * vecs[y][i] for y in range(C)) for i in range(C * C)]
    cov = sp.Matrix(C * C, C * C, lambda i, j: sum(pv[y] * (vecs[y][i] - mean[i]) * (vecs[y][j] - mean[j])
                                                  for y in range(C)))
    diff = (fam.mbar_sym.subs(point) - cov).applyfunc(lambda e: sp.N(e, 30))
    assert max(abs(e) for e in diff) < 1e-25


def test_display_coordinates():
    """The display rewrites give the textbook forms of THEORY §4's table."""
    b = families.get("bernoulli")
    p = sp.Symbol("p", positive=True)
    assert sp.simplify(b.display(b.sigma_sym)[0, 0] - p * (1 - p)) == 0
    u = b.direction_sym()
    nv1 = b.display(b.contract4(b.M_sym, u))
    assert sp.simplify(nv1 - p * (1 - p) * (1 - 2 * p) ** 2 * u[0] ** 4) == 0
    g = families.get("gaussian_meanvar")
    mu, s = sp.Symbol("mu", real=True), sp.Symbol("sigma", positive=True)
    expect = sp.Matrix([[s ** 2, 2 * mu * s ** 2], [2 * mu * s ** 2, 2 * s ** 2 * (2 * mu ** 2 + s ** 2)]])
    assert sp.simplify(g.display(g.sigma_sym) - expect) == sp.zeros(2, 2)
    c = families.get("categorical", C=3)
    ps = c.p_sym
    assert sp.simplify(c.display(c.sigma_sym)[0, 1] + ps[0] * ps[1]) == 0
