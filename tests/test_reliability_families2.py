"""Issue 13 regressions for the Poisson and Gaussian families, the links and the registry.

Items 16 (stable forms, against mpmath at 50 digits), 18 (bounded Poisson support
enumeration), 20 (no inf/NaN from finite input: a named ValueError where a value is not
representable), 22 (numpy integers, bools, non-str family names) and 27 (the Gaussian's
default link is the mean).  Every oracle here is independent of the code under test: mpmath
at 50 digits, exact Poisson tails from mpmath's regularised incomplete gamma, reverse-mode
autograd of the Gaussian log-likelihood, torch's own losses, and a seeded Monte Carlo.
"""
from __future__ import annotations

import math
import time

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from torch import nn

from fishersym import families
from fishersym.families.constants import family_constants
from fishersym.families.links import MeanLogVar, Scale, Identity
from fishersym.families import poisson as poisson_mod
from fishersym.numeric import conditional_stats

mpmath.mp.dps = 50
mpf = mpmath.mpf


def _all_values(res) -> list[torch.Tensor]:
    return [t for _, d in res.items() if isinstance(d, dict) for t in d.values()
            if isinstance(t, torch.Tensor) and t.is_floating_point()]


# ----------------------------------------------------------------------------- item 22
@pytest.mark.parametrize("bad", [["categorical"], None, 3, families.Categorical, ("poisson",), 2.5])
def test_get_refuses_non_names_with_a_clear_type_error(bad):
    # issue 13 item 22: get(['categorical']) raised "unhashable type: 'list'"
    with pytest.raises(TypeError, match=r"family must be a name \(str\) or an ExponentialFamily instance, got "
                                        + type(bad).__name__):
        families.get(bad)


@pytest.mark.parametrize("name", ["poisson", "gaussian"])
def test_numpy_integer_counts_accepted_bools_and_floats_refused(name):
    # issue 13 item 22: numpy integers for C were refused
    for C in (np.int64(3), np.int32(2), np.uint8(1)):
        fam = families.get(name, C=C)
        assert fam.C == int(C) and type(fam.C) is int
    with pytest.raises(TypeError, match="bool"):
        families.get(name, C=True)
    for bad in (2.0, "2", 0, -1, np.float64(2.0)):
        with pytest.raises(ValueError, match="C must be a positive integer"):
            families.get(name, C=bad)
    if name == "gaussian":
        fam = families.get(name, sigma2=np.float32(0.5))
        assert fam.sigma2 == 0.5
        for bad in (True, 1e-320, "1", float("inf")):
            with pytest.raises(ValueError, match="sigma2"):
                families.get(name, sigma2=bad)


def test_scale_link_refuses_infinite_factor():
    with pytest.raises(ValueError, match="finite positive"):
        Scale(float("inf"))
    with pytest.raises(ValueError, match="finite positive"):
        Scale(True)


# ----------------------------------------------------------------------------- item 18
@mpmath.workdps(50)
def _exact_tails(lam: float, lo: int, hi: int) -> tuple[float, float]:
    """P(Y < lo), P(Y > hi) for Y ~ Poisson(λ), from the regularised incomplete gamma at 50 digits."""
    L = mpf(lam)
    below = mpmath.gammainc(lo, L, mpmath.inf, regularized=True) if lo > 0 else mpf(0)   # P(Y ≤ lo−1)
    above = 1 - mpmath.gammainc(hi + 1, L, mpmath.inf, regularized=True)                  # P(Y ≥ hi+1)
    return float(below), float(above)


@pytest.mark.parametrize("logl", [-40.0, -3.0, 0.0, 1.5, 4.0, 10.0, 20.0])
@pytest.mark.parametrize("log_share", [math.log(1e-15 / 2), math.log(1e-6)])
def test_chernoff_window_is_sound_and_tight(logl, log_share):
    # issue 13 item 18: closed-form (bisection) window instead of a loop over k
    lam = math.exp(logl)
    t0 = time.perf_counter()
    lo, hi = poisson_mod.chernoff_window(lam, log_share)
    assert time.perf_counter() - t0 < 0.5
    below, above = _exact_tails(lam, lo, hi)
    share = math.exp(log_share)
    assert below <= share and above <= share
    # not absurdly wide: the Chernoff window is within a few Gaussian widths plus the log term
    L = -log_share
    assert hi - lo <= 2 * (math.sqrt(2 * lam * L) + L) + 2 * 4 * 2.0 ** -52 * lam + 8


@pytest.mark.parametrize("logl", [10.0, 20.0])
def test_poisson_support_large_rate_answers_quickly(logl):
    # issue 13 item 18: the Chernoff loop counted k up one by one from ⌈λ⌉ (e^20: ~5e8 steps)
    fam = families.get("poisson")
    h = torch.tensor([[logl]])
    t0 = time.perf_counter()
    sup = fam.support(h)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0, elapsed   # ~0.1-0.5 s on an idle core; generous for loaded CI machines
    lam = math.exp(logl)
    assert sup.t[0, 0] > 0 and sup.t[0, 0] <= lam <= sup.t[-1, 0]
    # the enumerated mass is 1 up to the truncation (≤ 1e-15) and rounding of the stable log-pmf
    assert abs(float(sup.prob.sum()) - 1.0) < 1e-12


@pytest.mark.parametrize("logl,dtype", [(300.0, torch.float64), (700.0, torch.float64), (1e4, torch.float64),
                                        (40.0, torch.float64), (20.0, torch.float32)])
def test_poisson_support_refuses_huge_grids_fast(logl, dtype):
    # issue 13 item 18: e^300 hung forever; now refused before anything is allocated
    fam = families.get("poisson")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="too large|exceeds|no longer holds every integer"):
        fam.support(torch.tensor([[logl]], dtype=dtype))
    assert time.perf_counter() - t0 < 1.0


def test_poisson_support_grid_size_checked_across_outputs():
    fam = families.get("poisson", C=3)
    with pytest.raises(ValueError, match=f"exceeds {getattr(poisson_mod, 'MAX_SUPPORT_POINTS', 0)}"):
        fam.support(torch.tensor([[8.0, 8.0, 8.0]]))          # ~2000³ points
    sup = fam.support(torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, 1.0]]))
    assert torch.allclose(sup.prob.sum(-1), torch.ones(2), atol=1e-13)


@given(st.floats(-800, 25), st.integers(1, 2))
def test_poisson_support_bounded_work_property(logl, C):
    # issue 13 item 18 (the class): any rate answers or refuses, quickly, with mass ≈ 1
    fam = families.get("poisson", C=C)
    h = torch.full((1, C), logl)
    t0 = time.perf_counter()
    try:
        sup = fam.support(h)
    except ValueError as exc:
        assert "points" in str(exc)
    else:
        assert abs(float(sup.prob.sum()) - 1.0) < 1e-11
    assert time.perf_counter() - t0 < 5.0


@pytest.mark.parametrize("logl", [-2.0, 3.0, 12.0, 20.0, 28.0])
def test_poisson_log_prob_stable_against_mpmath(logl):
    # issue 13 item 16: y·h − λ − log y! lost ~log10(y·h) digits at large rates (1e-6 at e^20)
    fam = families.get("poisson")
    lam = math.exp(logl)
    ks = sorted({0, 1, 2, 7, 30, 31, 45} | {max(0, int(lam + j * math.sqrt(lam + 1))) for j in range(-6, 7)})
    t = torch.tensor(ks, dtype=torch.float64).unsqueeze(-1)
    lp = fam.log_prob(t, torch.tensor([logl]))
    for k, v in zip(ks, lp.tolist()):
        exact = k * mpf(logl) - mpmath.exp(mpf(logl)) - mpmath.loggamma(k + 1)
        # a few ε per unit of |y − λ| (φ's cancellation), of |log p| and of y·log y (stirlerr, y ≤ 30)
        tol = 16 * 2.0 ** -52 * (8 + abs(k - lam) + abs(float(exact)) + min(k, 30) * math.log(min(k, 30) + 1))
        assert abs(v - float(exact)) <= tol, (k, v, float(exact))


def test_poisson_log_prob_is_twice_differentiable_in_h():
    fam = families.get("poisson")
    h = torch.tensor([1.3], requires_grad=True)
    t = torch.tensor([[0.0], [2.0], [35.0]])
    (g,) = torch.autograd.grad(fam.log_prob(t, h).sum(), h, create_graph=True)
    (g2,) = torch.autograd.grad(g, h)
    lam = math.exp(1.3)
    assert abs(float(g) - (37.0 - 3 * lam)) < 1e-12 and abs(float(g2) + 3 * lam) < 1e-12


# ----------------------------------------------------------------------------- items 16, 20: quad forms vs mpmath
@mpmath.workdps(50)
def _poisson_exact(h, u):
    s2 = sum(mpmath.exp(mpf(hc)) * mpf(uc) ** 2 for hc, uc in zip(h, u))
    k4 = sum(mpmath.exp(mpf(hc)) * mpf(uc) ** 4 for hc, uc in zip(h, u))
    return s2, k4 + 2 * s2 ** 2


@mpmath.workdps(50)
def _meanvar_exact(h, u):
    h1, h2 = mpf(h[0]), mpf(h[1])
    var = -1 / (2 * h2)
    mu = h1 * var
    a = mpmath.sqrt(var) * (mpf(u[0]) + 2 * mu * mpf(u[1]))
    b = var * mpf(u[1])
    return a ** 2 + 2 * b ** 2, 48 * b ** 2 * (a ** 2 + b ** 2) + 2 * (a ** 2 + 2 * b ** 2) ** 2


def _check_against(fam, h, u, exact_fn, rel_fi):
    fi, nv1, err = fam.quad_forms(h.unsqueeze(0), u.unsqueeze(0), error=True)
    ex_fi, ex_nv1 = exact_fn(h.tolist(), u.tolist())
    assert torch.isfinite(nv1).all() and torch.isfinite(err).all()
    assert abs(float(fi[0]) - float(ex_fi)) <= rel_fi * float(ex_fi) + 1e-300
    # the declared rounding bound holds (float64 arithmetic: exact to first order)
    assert abs(mpf(float(nv1[0])) - ex_nv1) <= mpf(float(err[0])) * (1 + 1e-6) + mpf(1e-300), \
        (float(nv1[0]), float(ex_nv1), float(err[0]))


@given(st.lists(st.floats(-600, 300), min_size=1, max_size=3),
       st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3), st.integers(-60, 60))
def test_poisson_quad_forms_against_mpmath_property(hs, us, scale):
    # issue 13 item 16: stable forms, checked at 50 digits on extreme log-rates and directions
    C = len(hs)
    fam = families.get("poisson", C=C)
    h = torch.tensor(hs)
    u = torch.tensor(us[:C]) * 10.0 ** scale
    try:
        _check_against(fam, h, u, _poisson_exact, 20 * C * 2.2e-16)
    except ValueError as exc:   # only where N·V₁ truly exceeds the float64 range
        assert "overflows" in str(exc)
        assert _poisson_exact(hs, u.tolist())[1] > mpf(torch.finfo(torch.float64).max)


@given(st.lists(st.floats(-100, 100), min_size=1, max_size=3),
       st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3), st.integers(-10, 10))
def test_poisson_quad_forms_float32_error_bound_property(hs, us, scale):
    # issue 13 items 16, 20 in float32: finite where representable, within the declared bound
    C = len(hs)
    fam = families.get("poisson", C=C)
    h = torch.tensor(hs, dtype=torch.float32)
    u = (torch.tensor(us[:C]) * 10.0 ** scale).to(torch.float32)
    try:
        fi, nv1, err = fam.quad_forms(h.unsqueeze(0), u.unsqueeze(0), error=True)
    except ValueError as exc:
        assert "overflows torch.float32" in str(exc)
        assert _poisson_exact(h.tolist(), u.tolist())[1] > mpf(torch.finfo(torch.float32).max) / 2
        return
    ex_fi, ex_nv1 = _poisson_exact(h.tolist(), u.tolist())
    assert abs(mpf(float(nv1[0])) - ex_nv1) <= mpf(float(err[0])) * (1 + mpf(1e-3)) + mpf(1e-44)


def test_poisson_fisher_finite_where_representable_beyond_rate_overflow():
    # issue 13 item 20: e^h overflows at h = 750, but uᵀΣu = e^750·u² is representable for small u
    fam = families.get("poisson", C=2)
    h = torch.tensor([[750.0, -800.0]])
    u = torch.tensor([[1e-170, 1e150]])
    fi = fam.sigma_quad(h, u)
    exact = mpmath.exp(750) * mpf(1e-170) ** 2 + mpmath.exp(-800) * mpf(1e150) ** 2
    assert abs(float(fi[0]) / float(exact) - 1) < 1e-14
    with pytest.raises(ValueError, match=r"rate λ = e\^h overflows torch.float64"):
        fam.sigma(h)


@pytest.mark.parametrize("logl,dtype", [(400.0, torch.float64), (600.0, torch.float64), (700.0, torch.float64),
                                        (708.0, torch.float64), (710.0, torch.float64),
                                        (50.0, torch.float32), (80.0, torch.float32), (90.0, torch.float32)])
def test_poisson_constants_raise_named_overflow_not_nan(logl, dtype):
    # issue 13 item 20: log-rates 400–700 gave NaN/inf constants and var1 bounds
    fam = families.get("poisson", C=2)
    h = torch.tensor([[logl, 0.5]], dtype=dtype)
    if dtype == torch.float64:  # (constants.py certifies in float64 whatever the input dtype)
        with pytest.raises(ValueError, match=r"poisson: .*overflows torch.float64.*log-rate"):
            family_constants(fam, h, optimised=False)
    model = nn.Sequential(nn.Linear(2, 2)).to(dtype)
    with torch.no_grad():
        model[0].weight.fill_(0.01)
        model[0].bias.copy_(torch.tensor([logl, 0.5], dtype=dtype))
    with pytest.raises(ValueError, match=r"poisson: .*overflows torch.float(32|64)"):
        conditional_stats(model, torch.randn(3, 2, dtype=dtype), fam)


@pytest.mark.parametrize("logl,dtype", [(300.0, torch.float64), (40.0, torch.float32), (-300.0, torch.float64)])
def test_poisson_large_representable_rates_give_finite_results(logl, dtype):
    # issue 13 item 20: where every value is representable, everything is finite
    fam = families.get("poisson")
    c = family_constants(fam, torch.tensor([[logl]], dtype=dtype), optimised=False)
    for v in c.as_dict().values():
        assert torch.isfinite(v).all()
    lam = math.exp(logl)
    assert abs(float(c.M_max_cert[0]) / (lam + 2 * lam * lam) - 1) < 1e-5
    model = nn.Sequential(nn.Linear(2, 1)).to(dtype)
    with torch.no_grad():
        model[0].weight.fill_(1e-3)
        model[0].bias.fill_(logl)
    res = conditional_stats(model, torch.randn(4, 2, dtype=dtype), "poisson")
    for v in _all_values(res):
        assert torch.isfinite(v).all()


def test_poisson_sampling_refuses_rates_torch_cannot_sample():
    # torch.poisson returns −9.2e18 for λ ≥ 2^63 (int64 counts): refused, not garbage
    fam = families.get("poisson")
    with pytest.raises(ValueError, match="cannot sample rates above 2\\^62"):
        fam.sample(torch.tensor([50.0]), 3)
    y = fam.sample(torch.tensor([30.0]), 200, generator=torch.Generator().manual_seed(0))
    assert (y > 0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gaussian_quad_forms_against_mpmath_extreme(dtype):
    # issue 13 item 16/20: σ²·Σu² overflowed in u² before σ² scaled it down
    eps = torch.finfo(dtype).eps
    big = 1e150 if dtype == torch.float64 else 1e18
    for s2, us in ((1e-200 if dtype == torch.float64 else 1e-30, [big, -big / 3]), (1.0, [0.3, -2.0]),
                   (7.5, [1e-40 if dtype == torch.float64 else 1e-9, 2.0])):
        fam = families.get("gaussian", C=2, sigma2=s2) if dtype == torch.float64 or s2 > 1e-38 else None
        if fam is None:
            continue
        u = torch.tensor([us], dtype=dtype)
        h = torch.zeros(1, 2, dtype=dtype)
        fi, nv1, err = fam.quad_forms(h, u, error=True)
        U = [mpf(float(x)) for x in u[0]]
        ex_fi = mpf(s2) * sum(x * x for x in U)
        ex_nv1 = 2 * ex_fi ** 2
        assert abs(mpf(float(fi[0])) - ex_fi) <= 8 * eps * ex_fi
        assert abs(mpf(float(nv1[0])) - ex_nv1) <= mpf(float(err[0]))


def test_gaussian_overflowing_nv1_is_named():
    fam = families.get("gaussian", C=1, sigma2=1.0)
    with pytest.raises(ValueError, match="N·V₁ = 2σ⁴‖u‖⁴ overflows torch.float32"):
        fam.quad_forms(torch.zeros(1, 1, dtype=torch.float32), torch.tensor([[1e12]], dtype=torch.float32))


_MEANVAR_GRID = [(mu, s2) for mu in (0.0, 1e-8, 3.0, -1e4, 1e12) for s2 in (1e-30, 1e-6, 1.0, 1e8, 1e30)]


@pytest.mark.parametrize("mu,s2", _MEANVAR_GRID)
def test_meanvar_quad_forms_against_mpmath_grid(mu, s2):
    # issue 13 item 16: N·V₁ = 2a⁴ + 56a²b² + 56b⁴ at 50 digits, incl. cancellation in a = σ(u₁ + 2μu₂)
    fam = families.get("gaussian_meanvar")
    h = torch.tensor([mu / s2, -0.5 / s2])
    for u in ([1.0, 0.0], [0.0, 1.0], [1.0, -0.3], [-2 * mu, 1.0], [-2 * mu * (1 + 1e-9), 1.0]):
        u_t = torch.tensor(u)
        try:
            fi, nv1, err = fam.quad_forms(h.unsqueeze(0), u_t.unsqueeze(0), error=True)
        except ValueError as exc:
            assert "overflows" in str(exc)
            assert _meanvar_exact(h.tolist(), u)[1] > mpf(torch.finfo(torch.float64).max) / 4
            continue
        ex_fi, ex_nv1 = _meanvar_exact(h.tolist(), u_t.tolist())
        assert torch.isfinite(err).all()
        assert abs(mpf(float(nv1[0])) - ex_nv1) <= mpf(float(err[0])) * (1 + mpf(1e-6)) + mpf(1e-300), (u, mu, s2)
        # and the bound is honest, not vacuous, where a does not cancel
        if u in ([1.0, 0.0], [0.0, 1.0]) and ex_nv1 > 0:
            assert float(err[0]) <= 1e-12 * float(ex_nv1)


def test_meanvar_float32_quad_forms_bound_holds_under_cancellation():
    # float32, |μ|/σ ≈ 1e3: a = σ(u₁ + 2μu₂) cancels; the declared bound must still cover the error
    fam = families.get("gaussian_meanvar")
    for mu, s2 in ((1e3, 1.0), (-250.0, 0.04), (3.0, 1e-6)):
        h = torch.tensor([[mu / s2, -0.5 / s2]], dtype=torch.float32)
        for u in ([-2 * mu, 1.0], [1.0, 1e-3], [0.5, 2.0]):
            u32 = torch.tensor([u], dtype=torch.float32)
            fi, nv1, err = fam.quad_forms(h, u32, error=True)
            ex = _meanvar_exact([float(x) for x in h[0]], [float(x) for x in u32[0]])[1]
            assert abs(mpf(float(nv1[0])) - ex) <= mpf(float(err[0])) * (1 + mpf(1e-3)), (mu, s2, u)


@given(st.floats(-1e6, 1e6), st.floats(-60, 60), st.floats(-1e3, 1e3), st.floats(-1e3, 1e3),
       st.sampled_from([torch.float64, torch.float32]))
def test_meanvar_quad_forms_error_bound_property(mu, logs2, u1, u2, dtype):
    # issue 13 items 16, 20 (the class): through the MeanLogVar link, in both dtypes, the computed
    # N·V₁ is finite and within its declared rounding bound of the 50-digit value at the same h, u
    fam = families.get("gaussian_meanvar")
    o = torch.tensor([[mu, logs2]], dtype=dtype)
    try:
        h = fam.natural(o)
        fi, nv1, err = fam.quad_forms(h, torch.tensor([[u1, u2]], dtype=dtype), error=True)
    except ValueError as exc:
        assert "overflows" in str(exc) or "underflows" in str(exc)
        return
    assert torch.isfinite(nv1).all() and torch.isfinite(err).all()
    uu = [float(x) for x in torch.tensor([u1, u2], dtype=dtype)]
    ex = _meanvar_exact([float(x) for x in h[0]], uu)[1]
    assert abs(mpf(float(nv1[0])) - ex) <= mpf(float(err[0])) * (1 + mpf(1e-3)) + mpf(1e-300)


@pytest.mark.parametrize("s,match", [(-100.0, "overflows"), (-89.0, "overflows"), (95.0, "underflows"),
                                     (88.0, "underflows")])
def test_meanlogvar_link_float32_exp_over_and_underflow_named(s, match):
    # issue 13 item 20: e^{−s} overflowed (inf h) or became subnormal (σ² with few digits) in float32
    fam = families.get("gaussian_meanvar")
    o = torch.tensor([[0.7, s]], dtype=torch.float32)
    with pytest.raises(ValueError, match=f"precision 1/σ² = e\\^\\(−s\\) {match} torch.float32"):
        fam.natural(o)


def test_meanlogvar_link_extremes_accurate_where_representable():
    fam = families.get("gaussian_meanvar")
    for s, dtype in ((-80.0, torch.float32), (80.0, torch.float32), (-700.0, torch.float64), (700.0, torch.float64)):
        o = torch.tensor([[0.7, s]], dtype=dtype)
        h = fam.natural(o)
        mu, var = fam._mu_var(h)
        assert abs(float(var[0]) / math.exp(s) - 1) < 8 * torch.finfo(dtype).eps
        assert abs(float(mu[0]) / 0.7 - 1) < 8 * torch.finfo(dtype).eps
    with pytest.raises(ValueError, match="h₁ = μ/σ² overflows"):
        fam.natural(torch.tensor([[1e30, -20.0]], dtype=torch.float32))


def test_meanvar_identity_link_subnormal_h2_refused():
    fam = families.get("gaussian_meanvar", link="identity")
    with pytest.raises(ValueError, match="σ² = −1/\\(2h_2\\) overflows or has lost its digits"):
        fam.check_h(torch.tensor([[0.0, -1e-40]], dtype=torch.float32))


# ----------------------------------------------------------------------------- item 27
def test_gaussian_default_link_is_the_mean():
    # issue 13 item 27: the default was the natural parameter h = μ/σ² (off by σ⁴ in V₁ for MSE nets)
    fam = families.get("gaussian", sigma2=2.0)
    assert isinstance(fam.link, Scale) and fam.link.c == 0.5
    mu = torch.tensor([[1.2]])
    assert torch.allclose(fam.mean(fam.natural(mu)), mu)
    assert isinstance(families.get("gaussian", sigma2=2.0, link="natural").link, Identity)
    assert isinstance(families.get("gaussian", sigma2=2.0, link="identity").link, Identity)
    assert isinstance(families.get("gaussian", sigma2=2.0, link="mean").link, Scale)
    with pytest.raises(ValueError, match="'mean' \\(the default"):
        families.get("gaussian", link="logit")


def _mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


@pytest.mark.parametrize("sigma2", [0.3, 1.0, 4.0])
def test_gaussian_mean_network_fisher_equals_jacobian_over_sigma2(sigma2):
    # issue 13 item 27: for a network that outputs μ, I(θ_i|x) = ‖∂μ/∂θ_i‖²/σ², V₁ = 2‖∂μ/∂θ_i‖⁴/σ⁴
    model = _mlp(0)
    x = torch.randn(5, 3)
    res = conditional_stats(model, x, families.get("gaussian", C=2, sigma2=sigma2))
    params = dict(model.named_parameters())
    for b in range(x.shape[0]):
        jac = torch.func.jacrev(lambda p, b=b: torch.func.functional_call(model, p, (x[b:b + 1],))[0])(
            {k: v.detach() for k, v in params.items()})
        for name, J in jac.items():          # J: (2, *param.shape) = ∂μ/∂θ
            u2 = J.square().sum(0)
            assert torch.allclose(res["fisher"][name][b], u2 / sigma2, rtol=1e-10, atol=1e-14)
            assert torch.allclose(res["var1"][name][b], 2 * u2.square() / sigma2 ** 2, rtol=1e-10,
                                  atol=1e-14)


def test_gaussian_mean_fisher_against_autograd_monte_carlo():
    # issue 13 item 27: the Fisher from its definition E[(∂ℓ/∂θ)²], ℓ the Gaussian log-likelihood
    # of y ~ N(μ_θ(x), σ²), by autograd per sample; seeded.  With n = 20000 draws the relative
    # standard error of a mean of squared scores is √(2/n) = 1 %, so a 6 % tolerance is a 6-sigma
    # event per entry: false alarm < 1e-8 per entry (Bernstein/CLT), < 1e-6 over the entries.
    sigma2 = 2.5
    model = _mlp(1)
    x = torch.randn(1, 3)
    res = conditional_stats(model, x, families.get("gaussian", C=2, sigma2=sigma2))
    g = torch.Generator().manual_seed(123)
    n = 20000
    with torch.no_grad():
        mu = model(x)[0]
    y = mu + math.sqrt(sigma2) * torch.randn(n, 2, generator=g)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loglik(p, y1):
        m = torch.func.functional_call(model, p, (x,))[0]
        return -(y1 - m).square().sum() / (2 * sigma2)

    scores = torch.func.vmap(torch.func.grad(loglik), in_dims=(None, 0))(params, y)
    for name, s in scores.items():
        mc = s.square().mean(0)
        exact = res["fisher"][name][0]
        big = exact > 1e-3 * exact.max()
        assert torch.allclose(mc[big], exact[big], rtol=0.06)


def test_gaussian_mse_sum_hessian_is_fisher_of_sigma2_half():
    # the documented mapping: MSELoss(reduction="sum")'s Gauss-Newton diagonal = Fisher of sigma2 = 0.5,
    # and GaussianNLLLoss(var) with fixed var = Fisher of sigma2 = var (linear model: Hessian = GGN)
    torch.manual_seed(2)
    lin = nn.Linear(3, 2)
    x = torch.randn(1, 3)
    y = torch.randn(1, 2)
    w = lin.weight.detach().clone()

    def mse(wf):
        return nn.functional.mse_loss(x @ wf.T + lin.bias.detach(), y, reduction="sum")

    def gnll(wf, var=0.7):
        return nn.functional.gaussian_nll_loss(x @ wf.T + lin.bias.detach(), y, torch.full((1, 2), var),
                                               reduction="sum")
    H = torch.autograd.functional.hessian(mse, w).reshape(6, 6).diagonal().reshape(2, 3)
    res = conditional_stats(nn.Sequential(lin), x, families.get("gaussian", C=2, sigma2=0.5))
    assert torch.allclose(res["fisher"]["0.weight"][0], H, rtol=1e-12)
    H2 = torch.autograd.functional.hessian(gnll, w).reshape(6, 6).diagonal().reshape(2, 3)
    res2 = conditional_stats(nn.Sequential(lin), x, families.get("gaussian", C=2, sigma2=0.7))
    assert torch.allclose(res2["fisher"]["0.weight"][0], H2, rtol=1e-12)


def test_gaussian_sigma2_one_unchanged_by_the_link_default():
    model = _mlp(3)
    x = torch.randn(4, 3)
    a = conditional_stats(model, x, families.get("gaussian", C=2))
    b = conditional_stats(model, x, families.get("gaussian", C=2, link="natural"))
    for k in ("fisher", "var1", "var2"):
        for name in a[k]:
            assert torch.allclose(a[k][name], b[k][name], rtol=1e-14, atol=0)


def test_meanlogvar_link_matches_gaussian_nll_loss_convention():
    # documented: GaussianNLLLoss takes var = exp(s) where gaussian_meanvar's network outputs s = log σ²
    fam = families.get("gaussian_meanvar")
    o = torch.tensor([[0.4, math.log(0.3)]], requires_grad=True)
    y = torch.tensor([1.1])
    t = torch.stack([y, y * y], -1)
    nll_fam = -fam.log_prob(t, MeanLogVar()(o))
    nll_torch = nn.functional.gaussian_nll_loss(o[:, 0], y, o[:, 1].exp(), full=True, reduction="sum")
    assert torch.allclose(nll_fam.sum(), nll_torch, rtol=1e-12)


@pytest.mark.parametrize("mu,s2", [(1e8, 1.0), (-3e6, 0.25), (0.4, 1e-12), (5.0, 3.0)])
def test_gaussian_log_probs_stable_against_mpmath(mu, s2):
    # issue 13 item 16: log π(y) + yh − F(h) cancels terms of size y²/σ² when y ≈ μ is large
    # (at μ = 1e8, σ² = 1 the naive form is off by ~1); the residual form keeps every digit.
    # Inherent error: h = μ/σ² is rounded, so the residual y − σ²h is off by ~2ε|μ|, which moves
    # (y − μ)²/(2σ²) by ~2ε|y − μ||μ|/σ² (+ its square); the rest is a few ε relative.
    eps = 2.0 ** -52
    g = families.get("gaussian", C=1, sigma2=s2, link="natural")
    mv = families.get("gaussian_meanvar")
    hm = mv.natural(torch.tensor([[mu, math.log(s2)]]))
    with mpmath.workdps(50):
        for y in (mu, mu + 1.5 * math.sqrt(s2), mu - 0.01 * math.sqrt(s2)):
            exact = float(-(mpf(y) - mpf(mu)) ** 2 / (2 * mpf(s2)) - mpmath.log(2 * mpmath.pi * mpf(s2)) / 2)
            tol = 16 * eps * (1 + abs(exact)) + 16 * eps * (abs(y - mu) + eps * abs(mu)) * abs(mu) / s2
            got = float(g.log_prob(torch.tensor([[y]]), torch.tensor([[mu / s2]]))[0])
            assert abs(got - exact) <= tol, (y, got, exact)
            got2 = float(mv.log_prob(torch.tensor([[y, y * y]]), hm)[0])
            assert abs(got2 - exact) <= 4 * tol, (y, got2, exact)
