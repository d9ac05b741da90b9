"""Issue 13 follow-ups from the fuzz campaign: closed-form κ₄ tensors, a certified closed-form
λ̃_max(K) for gaussian_meanvar, and the symbolic property on models the derivation refuses.

Oracles are independent of the code under test: SymPy's ∇⁴F (``kappa4_sym``) and fourth central
moment (``m4_sym``) evaluated with mpmath at 50 digits, mpmath's symmetric eigensolver on the
Sym² matrix of K, a dense grid on the unit circle, and the base class's nested forward-mode
autodiff of the log-partition.
"""
from __future__ import annotations

import itertools

import mpmath
import pytest
import sympy as sp
import torch
from torch import nn

from fishersym import families
from fishersym.families import base as base_mod
from fishersym.families.base import ExponentialFamily
from fishersym.families.constants import family_constants
from fishersym.numeric import conditional_stats
from fishersym.testing import check_model
from fishersym.testing.properties import NotApplicable, check_symbolic_numeric

mpmath.mp.dps = 50
mpf = mpmath.mpf
EPS = torch.finfo(torch.float64).eps
TINY = torch.finfo(torch.float64).tiny
FMAX = torch.finfo(torch.float64).max


def _mp_tensor(fam: ExponentialFamily, arr: sp.NDimArray, h_row) -> list:
    """A SymPy array of h evaluated with mpmath at 50 digits at the float64 point h_row (exact)."""
    expr = arr.subs(fam.sym_params) if fam.sym_params else arr
    f = sp.lambdify(list(fam.h_sym), expr.tolist(), modules="mpmath")
    with mpmath.workdps(50):
        return f(*[mpf(float(x)) for x in h_row])


def _entries(nested, C):
    return {idx: nested[idx[0]][idx[1]][idx[2]][idx[3]] for idx in itertools.product(range(C), repeat=4)}


def _meanvar_h(mu: float, var: float) -> torch.Tensor:
    return torch.tensor([[mu / var, -0.5 / var]], dtype=torch.float64)


def _assert_entrywise(k4: torch.Tensor, exact: dict, rtol: float):
    for idx, ex in exact.items():
        got = mpf(float(k4[(0,) + idx]))
        assert abs(got - ex) <= rtol * abs(ex) + 64 * TINY, (idx, float(got), ex)


# ----------------------------------------------------------------------------- κ₄ closed forms
MEANVAR_GRID = [(mu, var) for mu in (0.0, 1e-3, -2.5, 1e5, -1e100, 3e150)
                for var in (1e-100, 1e-3, 1.0, 7.5e3, 1e50, 1e75)]


@pytest.mark.parametrize("mu,var", MEANVAR_GRID)
def test_meanvar_kappa4_tensor_matches_sympy_at_50_digits(mu, var):
    # issue 13 (fuzz speed): closed-form κ₄ for gaussian_meanvar, entrywise against ∇⁴F in mpmath
    fam = families.get("gaussian_meanvar")
    h = _meanvar_h(mu, var)
    exact = _entries(_mp_tensor(fam, fam.kappa4_sym, h[0].tolist()), 2)
    top = max(abs(v) for v in exact.values())
    if top > FMAX:                       # not representable: a named ValueError, never inf
        with pytest.raises(ValueError, match="κ₄"):
            fam.kappa4_tensor(h)
        return
    if top > FMAX / 1e3:                 # borderline of overflow: either answer is acceptable
        pytest.skip("within 1e3 of overflow")
    k4 = fam.kappa4_tensor(h)
    assert k4.shape == (1, 2, 2, 2, 2) and k4.dtype == torch.float64
    _assert_entrywise(k4, exact, 64 * EPS)


@pytest.mark.parametrize("hrow", [(-700.0, 3.25), (-30.5, 0.0), (0.0, 700.0), (709.5, -1e-3), (12.0, 12.0)])
def test_poisson_kappa4_tensor_matches_sympy_at_50_digits(hrow):
    # issue 13 (fuzz speed): κ₄ = diag4(λ), entrywise against ∇⁴F in mpmath, including rates
    # e^{709.5} near the float64 limit (where λ² in M₄ overflows but κ₄ itself does not)
    fam = families.get("poisson", C=2)
    h = torch.tensor([hrow], dtype=torch.float64)
    exact = _entries(_mp_tensor(fam, fam.kappa4_sym, hrow), 2)
    _assert_entrywise(fam.kappa4_tensor(h), exact, 8 * EPS)
    with pytest.raises(ValueError, match="rate"):
        fam.kappa4_tensor(torch.tensor([[710.0, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("sigma2", [1.0, 0.3, 1e-30, 1e30])
def test_gaussian_kappa4_tensor_is_sympy_zero(sigma2):
    # issue 13 (fuzz speed): κ₄ ≡ 0 for the fixed-variance Gaussian
    fam = families.get("gaussian", C=2, sigma2=sigma2)
    h = torch.tensor([[1e10, -3.0], [0.0, 2.5]], dtype=torch.float64)
    exact = _entries(_mp_tensor(fam, fam.kappa4_sym, h[0].tolist()), 2)
    assert all(v == 0 for v in exact.values())
    k4 = fam.kappa4_tensor(h)
    assert k4.shape == (2, 2, 2, 2, 2) and bool((k4 == 0).all())


@pytest.mark.parametrize("name,kw", [("gaussian", {"C": 3, "sigma2": 0.7}), ("gaussian_meanvar", {}),
                                     ("poisson", {"C": 3})])
def test_kappa4_tensor_closed_form_agrees_with_autodiff_and_avoids_it(name, kw, monkeypatch):
    # issue 13 (fuzz speed): moment_tensors must not run the nested jacfwd of the base class
    # (~0.1–2 s per call); on main gaussian and gaussian_meanvar did.  The closed forms agree
    # with that autodiff route at moderate parameters.
    fam = families.get(name, **kw)
    g = torch.Generator().manual_seed(3)
    h = torch.randn((4, fam.C), generator=g, dtype=torch.float64)
    if name == "gaussian_meanvar":
        h[:, 1] = -h[:, 1].abs() - 0.2
    ref = ExponentialFamily.kappa4_tensor(fam, h)

    def boom(*a, **k):
        raise AssertionError("nested autodiff used for a family with a closed-form κ₄")

    monkeypatch.setattr(base_mod, "jacfwd", boom)
    monkeypatch.setattr(base_mod, "hessian", boom)
    S, k4, m4 = fam.moment_tensors(h)
    torch.testing.assert_close(k4, ref, rtol=1e-10, atol=1e-12 * float(ref.abs().max()) + 1e-300)
    assert torch.isfinite(m4).all()


# ----------------------------------------------------------------------------- K_max_upper (meanvar)
K_GRID = [(mu, var) for mu in (0.0, 1e-8, -0.7, 3.0, -1e4, 1e20)
          for var in (1e-170, 1e-30, 1e-6, 0.4, 1.0, 25.0, 1e8, 1e30)]


def _sym2_max_and_circle_max(fam, h_row, n_angles: int = 720):
    """(largest Sym² eigenvalue of mat(K), max over a grid of unit v of K(v,v,v,v)), both in mpmath."""
    K = _mp_tensor(fam, fam.m4_sym, h_row)
    with mpmath.workdps(50):
        r2 = 1 / mpmath.sqrt(2)
        basis = [{(0, 0): mpf(1)}, {(1, 1): mpf(1)}, {(0, 1): r2, (1, 0): r2}]
        G = mpmath.matrix(3, 3)
        for i, Ei in enumerate(basis):
            for j, Ej in enumerate(basis):
                G[i, j] = mpmath.fsum(wi * K[a][b][c][d] * wj for (a, b), wi in Ei.items()
                                      for (c, d), wj in Ej.items())
        eig = max(mpmath.eigsy(G, eigvals_only=True))
        best = mpf(0)
        for k in range(n_angles):
            th = mpmath.pi * k / n_angles
            v = (mpmath.cos(th), mpmath.sin(th))
            q = mpmath.fsum(K[a][b][c][d] * v[a] * v[b] * v[c] * v[d]
                            for a, b, c, d in itertools.product(range(2), repeat=4))
            best = max(best, q)
    return eig, best


@pytest.mark.parametrize("mu,var", K_GRID)
def test_meanvar_K_max_upper_bounds_sym2_eigenvalue_and_circle(mu, var):
    # issue 13 (item 2 of the fuzz campaign): the closed-form certificate bounds λ̃_max(K) —
    # the largest Sym² eigenvalue of mat(K) and a dense grid of K(v,v,v,v) on the unit circle,
    # both from SymPy's M₄ in mpmath at 50 digits — and is within its stated factor 4 of it.
    # σ² = 1e-170 puts the bound in float64's subnormal range (its absolute underflow margin).
    fam = families.get("gaussian_meanvar")
    h = _meanvar_h(mu, var)
    up = fam.closed_form_constants(h)["K_max_upper"]
    assert up.shape == (1,) and bool(torch.isfinite(up).all())
    eig, circ = _sym2_max_and_circle_max(fam, h[0].tolist())
    u = mpf(float(up[0]))
    assert u >= eig >= circ * (1 - mpf(10) ** -40), (float(u), float(eig), float(circ))
    assert u <= 4 * circ * (1 + mpf(10) ** -6) + mpf(1e-322), (float(u), float(circ))


def test_meanvar_K_max_upper_finite_wherever_values_are_representable():
    # issue 13 item 20 / the fuzz campaign: finite wherever M₄ is representable (with the
    # factor-4 margin of the docstring), a named ValueError otherwise — never inf or NaN
    fam = families.get("gaussian_meanvar")
    checked = refused = 0
    for mu in (0.0, 1e-300, -1.0, 1e10, -1e100, 1e200, 1e300):
        for s in range(-700, 701, 35):
            try:
                h = fam.natural(torch.tensor([[mu, float(s)]], dtype=torch.float64))
                S, _, m4 = fam.moment_tensors(h)
            except ValueError:
                continue
            try:
                up = fam.closed_form_constants(h)["K_max_upper"]
            except ValueError as exc:
                assert "K_max_upper" in str(exc)
                assert float(m4.abs().max()) > FMAX / 8, (mu, s)
                refused += 1
                continue
            assert bool(torch.isfinite(up).all()), (mu, s)
            assert float(up[0]) >= max(float(m4[0, 0, 0, 0, 0]), float(m4[0, 1, 1, 1, 1])), (mu, s)
            checked += 1
    assert checked >= 100


def test_meanvar_conditional_stats_without_eig_is_certified():
    # issue 13 (fuzz campaign): this valid call raised "no certified bound for λ̃_max(K) at C = 2"
    torch.manual_seed(0)
    model = nn.Linear(1, 2).double()
    x = torch.tensor([[0.3]], dtype=torch.float64)
    r = conditional_stats(model, x, "gaussian_meanvar", use_eig=False)
    for key in ("weight", "bias"):
        assert bool(torch.isfinite(r["var1_upper"][key]).all())
        assert bool((r["var1"][key] <= r["var1_upper"][key]).all())
        assert bool((r["fisher"][key] <= r["fisher_upper"][key]).all())
    fam = families.get("gaussian_meanvar")
    h = fam.natural(model(x).detach())
    no_eig = family_constants(fam, h, use_eig=False, optimised=False)
    with_eig = family_constants(fam, h, use_eig=True, optimised=False)
    assert "closed form" in no_eig.sources["K_max"]
    assert bool((no_eig.K_max_cert >= with_eig.K_max_cert).all())


# ----------------------------------------------------------------------------- symbolic property
def _shared_linear_model() -> nn.Sequential:
    torch.manual_seed(1)
    lin = nn.Linear(2, 2)
    return nn.Sequential(lin, nn.Tanh(), lin).double()


def test_symbolic_property_not_applicable_to_shared_linear():
    # issue 13 item 1 (fuzz campaign): symbolic_spec accepts a Sequential using one Linear twice,
    # which Derivation.evaluate refuses; check_symbolic_numeric crashed with its ValueError
    fam = families.get("gaussian", C=2)
    x = torch.randn(2, 2, dtype=torch.float64)
    with pytest.raises(NotApplicable, match="same nn.Linear instance"):
        check_symbolic_numeric(_shared_linear_model(), fam, x)


def test_check_model_reports_symbolic_not_applicable_for_shared_linear():
    # issue 13 item 1: through check_model, the property is "not applicable", not a crash
    x = torch.randn(2, 2, dtype=torch.float64)
    rep = check_model(_shared_linear_model(), "gaussian", x, properties=["symbolic_numeric"],
                      max_examples=1, family_params={"C": 2})
    (res,) = rep.results
    assert res.name == "symbolic_numeric" and res.status == "not applicable"
    assert "shared" in res.message or "same nn.Linear" in res.message
