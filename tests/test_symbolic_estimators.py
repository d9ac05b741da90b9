"""SymPy side of the estimator catalogue (THEORY §13): proofs, and every closed form against an
independent numeric computation (enumeration of labels / Rademacher signs, Gauss–Hermite
quadrature), with mutation checks showing the comparison catches a missing factor 2 or a missing
cross term.  All comparisons are exact up to float64 rounding (no sampling, no false alarms)."""
from __future__ import annotations

import doctest
import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from fishersym.symbolic import estimators as E
from fishersym.symbolic.catalogue import ESTIMATOR_CASES, render_estimator_case

ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "derivations"
PDFLATEX = shutil.which("pdflatex")
RTOL = 1e-10     # exact formulas vs exact enumeration / quadrature: only rounding separates them
MUT_GAP = 1e-3   # a mutant must miss by far more than rounding


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


# ---------------------------------------------------------------------------- proofs
@pytest.mark.parametrize("key", ["batched", "limit", "bounded", "hutchinson", "softmax", "param"])
def test_proof_holds(key):
    """Every proof the catalogue cites (batched M = 2, 3, 4 and all M, the √2 limit, its bounded-input
    form, Gaussian and Rademacher Hutchinson for C = 2, 3, the softmax factor for C = 2, 3, parameter-space
    Hutchinson for P = 3); computed once per process, as the catalogue does."""
    proofs = E.catalogue_proofs()[key]
    assert proofs
    for r in proofs:
        assert isinstance(r, E.Proof) and r.proved is True and r.statement, r.statement
        assert r.residual == (sp.sqrt(2) if key == "limit" else 0), r.statement


def test_moments_by_integration():
    assert [E.gaussian_moment(k) for k in range(7)] == [1, 0, 1, 0, 3, 0, 15]
    assert [E.rademacher_moment(k) for k in range(5)] == [1, 0, 1, 0, 1]


def test_proofs_reject_mutants():
    """The same expansion that proves the formula refutes it without the 2 or without the cross term."""
    I, v, _ = E.score_symbols(3)
    cross = sp.Add(*I) ** 2 - sp.Add(*[x ** 2 for x in I])
    assert not E.prove_batched_variance(3, candidate=sp.Add(*v) + cross).proved       # factor 2 missing
    assert not E.prove_batched_variance(3, candidate=sp.Add(*v)).proved               # cross term missing
    assert E.prove_batched_variance(3, candidate=sp.Add(*v) + 2 * cross).proved


def test_module_doctests():
    res = doctest.testmod(E, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 8 and res.failed == 0


def test_bad_input():
    with pytest.raises(ValueError, match="positive integer"):
        E.batched_variance(0)
    with pytest.raises(ValueError, match="expected 2 values"):
        E.batched_variance(2, I=[1, 2, 3])
    with pytest.raises(ValueError, match="'gaussian' or 'rademacher'"):
        E.output_hutchinson_variance("bernoulli", "uniform")
    with pytest.raises(ValueError, match="not symmetric"):
        E.output_hutchinson_variance(sp.Matrix([[1, 2], [0, 1]]))
    with pytest.raises(ValueError, match="not positive semi-definite"):
        E.output_hutchinson_variance(sp.Matrix([[1, 2], [2, 1]]), "rademacher")
    assert E.output_factor(sp.Matrix([[1, 1], [1, 1]])) * E.output_factor(sp.Matrix([[1, 1], [1, 1]])).T == \
        sp.Matrix([[1, 1], [1, 1]])                              # singular but PSD: a valid factor
    with pytest.raises(ValueError, match="integer >= 2"):
        E.prove_softmax_factor(1)


# ---------------------------------------------------------------------------- batched: label enumeration
def _softmax_scores(rng, C):
    """One input of a softmax model: label probabilities p and the score s_y = u_y − ū per label."""
    p = rng.dirichlet(np.ones(C))
    u = rng.normal(size=C)
    return p, u - p @ u


def _batched_case(seed=0, M=3, C=3):
    rng = np.random.default_rng(seed)
    inputs = [_softmax_scores(rng, C) for _ in range(M)]
    # exact variance of (Σ_m s_m)² by enumerating every label tuple (C^M of them)
    e2 = e4 = 0.0
    for ys in itertools.product(range(C), repeat=M):
        prob = np.prod([p[y] for (p, _), y in zip(inputs, ys)])
        t = sum(s[y] for (_, s), y in zip(inputs, ys))
        e2 += prob * t ** 2
        e4 += prob * t ** 4
    enum = e4 - e2 ** 2
    I = [float(p @ s ** 2) for p, s in inputs]                 # per input, by enumeration of its labels
    v = [float(p @ s ** 4) - Ii ** 2 for (p, s), Ii in zip(inputs, I)]
    return enum, I, v


def _eval_batched(expr, M, I, v):
    Is, vs, _ = E.score_symbols(M)
    return float(expr.xreplace({**dict(zip(Is, I)), **dict(zip(vs, v))}))


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_variance_vs_enumeration(seed):
    M = 3
    enum, I, v = _batched_case(seed, M=M)
    assert _rel(_eval_batched(E.batched_variance(M), M, I, v), enum) < RTOL
    Is, vs, _ = E.score_symbols(M)
    cross = sp.Add(*Is) ** 2 - sp.Add(*[x ** 2 for x in Is])
    for mutant in (sp.Add(*vs) + cross, sp.Add(*vs)):          # factor 2 missing, cross term missing
        assert _rel(_eval_batched(mutant, M, I, v), enum) > MUT_GAP


def test_batched_relative_sd_approaches_sqrt2():
    """Numeric companion to the limit proof: M copies of one softmax input."""
    enum1, I, v = _batched_case(3, M=1)
    rel = [np.sqrt(float(E.batched_variance(M, I=I * M, v=v * M))) / (M * I[0]) for M in (1, 10, 100)]
    assert abs(rel[-1] - np.sqrt(2)) < abs(rel[1] - np.sqrt(2)) < abs(rel[0] - np.sqrt(2)) + 1e-12
    assert abs(rel[-1] - np.sqrt(2)) < 0.05


# ---------------------------------------------------------------------------- output-space Hutchinson
def _softmax_L(p):
    C = len(p)
    return (np.eye(C) - np.outer(p, np.ones(C))) @ np.diag(np.sqrt(p))


def _sign_enumeration(L, u):
    C = L.shape[1]
    vals = np.array([(u @ L @ np.array(e)) ** 2 for e in itertools.product((-1.0, 1.0), repeat=C)])
    return vals.mean(), (vals ** 2).mean() - vals.mean() ** 2


def _hermite_moments(L, u, n=5):
    """E and Var of (uᵀLε)², ε ~ N(0, I), by tensor Gauss–Hermite quadrature (exact for degree ≤ 2n−1)."""
    x, wts = np.polynomial.hermite_e.hermegauss(n)
    wts = wts / wts.sum()
    C = L.shape[1]
    m2 = m4 = 0.0
    for idx in itertools.product(range(n), repeat=C):
        eps = x[list(idx)]
        wt = np.prod(wts[list(idx)])
        s = u @ L @ eps
        m2 += wt * s ** 2
        m4 += wt * s ** 4
    return m2, m4 - m2 ** 2


def _eval(expr, subs):
    return float(sp.sympify(expr).xreplace(subs))


@pytest.mark.parametrize("C", [2, 4])
def test_softmax_rademacher_vs_enumeration(C):
    from fishersym import families
    rng = np.random.default_rng(10 + C)
    p, u = rng.dirichlet(np.ones(C)), rng.normal(size=C)
    L = _softmax_L(p)
    assert np.allclose(L @ L.T, np.diag(p) - np.outer(p, p), atol=1e-14)
    mean, var = _sign_enumeration(L, u)
    I = u @ (np.diag(p) - np.outer(p, p)) @ u
    assert _rel(mean, I) < RTOL                                 # unbiased
    fam = families.get("categorical", C=C)
    subs = {**dict(zip(fam.p_sym, map(sp.Float, p))), **dict(zip(fam.direction_sym("u"), map(sp.Float, u)))}
    formula = _eval(E.output_hutchinson_variance(fam, "rademacher"), subs)
    assert _rel(formula, var) < RTOL
    centred = float(np.sum(p ** 2 * (u - p @ u) ** 4))
    for mutant in (2 * I ** 2, I ** 2 - 2 * centred, 2 * I ** 2 - centred):  # no ‖Lᵀu‖₄⁴ term, no 2, half
        assert _rel(mutant, var) > MUT_GAP


@pytest.mark.parametrize("seed", range(4))
def test_softmax_rademacher_vs_squared_score_numeric(seed):
    """v − Var_Rad = Σ p(1+2p)d⁴ − 3I² (THEORY §13), both variances by enumeration (labels, signs)."""
    rng = np.random.default_rng(30 + seed)
    C = 3 + seed % 2
    p = rng.dirichlet(np.ones(C) * (0.3 + seed))
    u = rng.normal(size=C) * (1 + 3 * (seed == 2))
    d = u - p @ u
    I = p @ d ** 2
    v = p @ d ** 4 - I ** 2                                      # labels y ~ p, score d_y
    _, var_rad = _sign_enumeration(_softmax_L(p), u)
    claim = np.sum(p * (1 + 2 * p) * d ** 4) - 3 * I ** 2
    assert abs((v - var_rad) - claim) < RTOL * (v + var_rad)
    assert (claim > 0) == (var_rad < v)                          # the criterion decides the winner


def _spd(rng, C):
    A = rng.integers(-3, 4, size=(C, C))
    return sp.Matrix(A) * sp.Matrix(A).T + sp.eye(C)


@pytest.mark.parametrize("C", [2, 3])
def test_cholesky_hutchinson_vs_enumeration_and_quadrature(C):
    rng = np.random.default_rng(20 + C)
    S = _spd(rng, C)
    u = rng.normal(size=C)
    Lnp = np.linalg.cholesky(np.array(S, dtype=float))
    I = u @ np.array(S, dtype=float) @ u
    usyms = sp.symbols(f"u_1:{C + 1}", real=True)
    subs = dict(zip(usyms, map(sp.Float, u)))
    _, var_r = _sign_enumeration(Lnp, u)
    assert _rel(_eval(E.output_hutchinson_variance(S, "rademacher"), subs), var_r) < RTOL
    m2, var_g = _hermite_moments(Lnp, u)
    assert _rel(m2, I) < RTOL
    assert _rel(_eval(E.output_hutchinson_variance(S, "gaussian"), subs), var_g) < RTOL
    assert _rel(I ** 2, var_g) > MUT_GAP                         # missing factor 2 detected
    assert _rel(var_r, var_g) > MUT_GAP                          # the two probe kinds do differ


def test_bernoulli_rademacher_exact_gaussian_2I2():
    """One output: (uLε)² = I for ε = ±1 (zero variance); Gaussian probes give 2I² (1-D quadrature)."""
    p, u = 0.3, 1.7
    I = p * (1 - p) * u ** 2
    L = np.array([[np.sqrt(p * (1 - p))]])
    assert _sign_enumeration(L, np.array([u]))[1] == pytest.approx(0.0, abs=1e-15)
    assert E.output_hutchinson_variance("bernoulli", "rademacher") == 0
    _, var_g = _hermite_moments(L, np.array([u]), n=4)
    (psym,) = {s for s in E.output_hutchinson_variance("bernoulli").free_symbols if s.name == "p"}
    formula = _eval(E.output_hutchinson_variance("bernoulli"), {psym: sp.Float(p), sp.Symbol("u", real=True): u})
    assert _rel(formula, var_g) < RTOL and _rel(formula, 2 * I ** 2) < RTOL


def test_batched_output_hutchinson_vs_enumeration():
    """(Σ_m u_mᵀL_mε_m)² with Rademacher ε: per-input variances plus the batched cross term."""
    rng = np.random.default_rng(5)
    C, M = 3, 2
    ins = [(rng.dirichlet(np.ones(C)), rng.normal(size=C)) for _ in range(M)]
    Ls = [_softmax_L(p) for p, _ in ins]
    vals = []
    for eps in itertools.product((-1.0, 1.0), repeat=C * M):
        e = np.array(eps).reshape(M, C)
        vals.append(sum(u @ L @ e[m] for m, ((_, u), L) in enumerate(zip(ins, Ls))) ** 2)
    vals = np.array(vals)
    enum = (vals ** 2).mean() - vals.mean() ** 2
    I = [u @ (np.diag(p) - np.outer(p, p)) @ u for p, u in ins]
    per = [_sign_enumeration(L, u)[1] for L, (_, u) in zip(Ls, ins)]
    formula = _eval_batched(E.batched_variance(M), M, I, per)
    assert _rel(formula, enum) < RTOL
    assert _rel(sum(per), enum) > MUT_GAP                        # without the cross term


# ---------------------------------------------------------------------------- parameter-space Hutchinson
def test_param_hutchinson_vs_enumeration():
    rng = np.random.default_rng(7)
    C, P = 3, 6
    p = rng.dirichlet(np.ones(C))
    S = np.diag(p) - np.outer(p, p)
    J = rng.normal(size=(C, P))
    F = J.T @ S @ J
    zs = np.array(list(itertools.product((-1.0, 1.0), repeat=P)))
    est = zs * (zs @ F.T)                                        # z_i (F z)_i for every z and i
    assert np.allclose(est.mean(0), np.diag(F), atol=1e-13)       # unbiased
    var = est.var(0)
    Fs, Js, Ss = sp.Matrix(F), sp.Matrix(J), sp.Matrix(S)
    for i in range(P):
        a = float(E.param_hutchinson_variance(Fs, i))
        b = float(E.param_hutchinson_variance_one_input(Js, Ss, i))
        assert _rel(a, var[i]) < RTOL and _rel(b, var[i]) < RTOL
        mutant = float(sum(F[i, j] ** 2 for j in range(P)))    # j = i not excluded
        assert _rel(mutant, var[i]) > MUT_GAP


# ---------------------------------------------------------------------------- catalogue
@pytest.fixture(scope="module")
def rendered():
    return {ec.name: render_estimator_case(ec) for ec in ESTIMATOR_CASES}


def test_estimator_catalogue_reproducible(rendered):
    readme = (CAT / "README.md").read_text(encoding="utf-8")
    from fishersym.symbolic.catalogue import estimator_index_entry
    for ec in ESTIMATOR_CASES:
        text, D = rendered[ec.name]
        assert (CAT / f"{ec.name}.tex").read_text(encoding="utf-8") == text, ec.name
        assert estimator_index_entry(ec, D) in readme.splitlines()
        assert r"\operatorname{Var}_{\mathrm{Rad}} = 0" in text      # Bernoulli: Rademacher probes exact
        assert text.count(r"\subsection{") == len(D)
        assert "NOT PROVED" not in text


def test_estimator_catalogue_values_match_numeric(rendered):
    """The per-parameter expressions the catalogue prints for the sigmoid net (estimator_variances),
    evaluated at a concrete point, against enumeration over Rademacher z (parameter space), over the
    two labels (Î₁) and 1-D Gauss–Hermite quadrature (Gaussian probes)."""
    _, D = rendered["estimators_sigmoid_bernoulli"]
    vals = E.estimator_variances(D)
    defs = D.definitions()
    inner = {s for s, _ in defs}
    used = {x for pd in D for c in pd.u for x in c.free_symbols} | {x for _, e in defs for x in e.free_symbols}
    free = sorted(used - inner, key=lambda s: s.name)
    point = {s: sp.Rational(k + 2, 7 + k) * (-1) ** k for k, s in enumerate(free)}
    for s, e in defs:                                           # z, a, h, then p, in evaluation order
        point[s] = sp.N(e.xreplace(point), 30)
    (psym, _), = D.forms.coords
    pv = float(point[psym])
    J = np.array([[float(sp.N(c.xreplace(point))) for c in pd.u] for pd in D]).T   # 1 × P
    F = J.T @ J * pv * (1 - pv)
    zs = np.array(list(itertools.product((-1.0, 1.0), repeat=F.shape[0])))
    var_param = (zs * (zs @ F.T)).var(0)
    for i, pd in enumerate(D):
        got = {k: float(sp.N(e.xreplace(point))) for k, e in vals[pd.symbol].items()}
        ui = J[0, i]
        assert _rel(got["param"], var_param[i]) < RTOL
        s = np.array([-pv, 1 - pv]) * ui                       # score u·(y − p) for y = 0, 1
        pr = np.array([1 - pv, pv])
        assert _rel(got["fisher"], pr @ s ** 2) < RTOL
        assert abs(got["v"] - (pr @ s ** 4 - (pr @ s ** 2) ** 2)) < RTOL * (pr @ s ** 2) ** 2
        _, var_g = _hermite_moments(np.array([[np.sqrt(pv * (1 - pv))]]), np.array([ui]), n=4)
        assert _rel(got["gaussian"], var_g) < RTOL
        assert got["rademacher"] == 0


@pytest.mark.skipif(PDFLATEX is None, reason="pdflatex is not installed; cannot compile LaTeX")
@pytest.mark.parametrize("ec", ESTIMATOR_CASES, ids=[e.name for e in ESTIMATOR_CASES])
def test_estimator_catalogue_compiles(ec, tmp_path):
    tex = CAT / f"{ec.name}.tex"
    r = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "-output-directory",
                        str(tmp_path), str(tex)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:]
    assert (tmp_path / f"{ec.name}.pdf").exists()
