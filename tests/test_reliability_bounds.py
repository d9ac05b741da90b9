"""Floating-point soundness of the group (Theorem D.1, Corollary 4.6) and off-diagonal (Theorem C.1)
bounds at saturated and badly scaled outputs (issue 13 items 2, 16, 22)."""
from __future__ import annotations

import mpmath
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fishersym import families, numeric

mpmath.mp.dps = 50
EPS = torch.finfo(torch.float64).eps


def _linear(n_in: int, n_out: int, w, b) -> nn.Linear:
    m = nn.Linear(n_in, n_out, dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(torch.as_tensor(w, dtype=torch.float64).reshape(n_out, n_in))
        m.bias.copy_(torch.as_tensor(b, dtype=torch.float64).reshape(n_out))
    return m


def _mp_bernoulli_mbar(h: float) -> mpmath.mpf:
    """M̄ = Var(r²) = E r⁴ − (E r²)² for r = y − p, y ~ Bernoulli(p), from the definition."""
    h = mpmath.mpf(h)
    p = 1 / (1 + mpmath.exp(-h))
    q = 1 - p
    e2 = p * q ** 2 + q * p ** 2
    e4 = p * q ** 4 + q * p ** 4
    return e4 - e2 ** 2


def _within(lo, v, hi, k: float) -> bool:
    lo, v, hi = (torch.as_tensor(t, dtype=torch.float64) for t in (lo, v, hi))
    tol = k * EPS * torch.stack([lo.abs(), v.abs(), hi.abs()]).amax(0) + torch.finfo(torch.float64).tiny
    return bool(((lo - v) <= tol).all() and ((v - hi) <= tol).all())


# issue 13 item 16 (F3): M̄ of the Bernoulli from autodiff moment tensors loses every digit at |h| ≳ 20
@pytest.mark.parametrize("h", [-60.0, -37.0, -20.0, -5.0, -1e-3, 0.0, 1e-6, 0.7, 3.0, 20.0, 40.0, 700.0])
def test_bernoulli_mbar_matches_mpmath(h):
    got = families.get("bernoulli").mbar(torch.tensor([[h]], dtype=torch.float64))
    assert got.shape == (1, 1, 1)
    ref = _mp_bernoulli_mbar(h)
    assert abs(float(got) - float(ref)) <= 16 * EPS * float(ref) + 1e-300


# issue 13 items 16, 22 (F3): Theorem D.1's V₁ upper bound was 3.3e-18 for V₁ = 1.33e-9
def test_d1_var1_bound_holds_for_saturated_bernoulli():
    m = _linear(1, 1, 1.0, 20.0)
    r = numeric.conditional_stats(m, torch.tensor([[0.5]], dtype=torch.float64), "bernoulli", group_bounds=True)
    for g in r.groups.values():
        assert _within(g["trace_var1_lower_d1"], g["var1"], g["trace_var1_upper_d1"], 4)
        assert float(g["trace_var1_upper_d1"]) > 0.5 * float(g["var1"])


# issue 13 item 22 (F3b): for C = 1 Theorem D.1 is attained; its evaluation must be widened outward
@pytest.mark.parametrize("b", [0.3, 1.0, 2.5, 4.0, 9.0, 15.0, 30.0])
def test_d1_bounds_contain_value_when_attained(b):
    m = nn.Sequential(_linear(1, 1, 0.8, 0.1), nn.Tanh(), _linear(1, 1, 1.3, b))
    r = numeric.conditional_stats(m, torch.zeros(1, 1, dtype=torch.float64), "bernoulli", group_bounds=True)
    for g in r.groups.values():
        for key in ("fisher", "var1", "var2"):
            for kind in ("d1", "c46"):
                lo, hi = g[f"trace_{key}_lower_{kind}"], g[f"trace_{key}_upper_{kind}"]
                assert bool((lo <= g[key]).all()) and bool((g[key] <= hi).all()), (key, kind, lo, g[key], hi)


# issue 13 items 16, 22 (F4): offdiag_var1_upper was 8.3e-37 for var1_ij = 1.6e-19
def test_offdiag_bound_holds_for_saturated_bernoulli():
    m = _linear(1, 1, 1.0, 40.0)
    x = torch.tensor([[0.5]], dtype=torch.float64)
    o = numeric.offdiag_stats(m, x, "bernoulli", [(("weight", (0, 0)),) * 2])
    h = 40.5
    ref = _mp_bernoulli_mbar(h) * mpmath.mpf(0.5) ** 4  # (a⊗b)ᵀM̄(a⊗b), a = b = x
    assert abs(float(o["var1_ij"]) - float(ref)) <= 32 * EPS * float(ref)
    assert float(o["var1_ij"]) <= float(o["offdiag_var1_upper"])


# issue 13 item 22 (F5): polarisation lost 9 digits of var1_ij, and the exact C = 1 bound was not widened
def test_offdiag_var1_direct_contraction_gaussian():
    m = _linear(2, 1, [0.0, 0.0], 0.0)
    x = torch.tensor([[100.0, 0.011]], dtype=torch.float64)
    o = numeric.offdiag_stats(m, x, "gaussian", [(("weight", (0, 0)), ("weight", (0, 1)))])
    fam = families.get("gaussian")
    s = float(fam.sigma(torch.zeros(1, 1, dtype=torch.float64)))
    ref = 2 * mpmath.mpf(s) ** 2 * mpmath.mpf(100.0) ** 2 * mpmath.mpf(0.011) ** 2  # Var(r²)a²b² = 2σ⁴a²b²
    assert abs(float(o["var1_ij"]) - float(ref)) <= 8 * EPS * float(ref)
    assert float(o["var1_ij"]) <= float(o["offdiag_var1_upper"])


FAMS = [("bernoulli", {}), ("categorical", {"C": 2}), ("categorical", {"C": 3}), ("gaussian", {"C": 1}),
        ("gaussian", {"C": 2}), ("poisson", {"C": 1}), ("poisson", {"C": 2})]
CAP = {"bernoulli": 50.0, "categorical": 50.0, "gaussian": 50.0, "poisson": 5.0}


@settings(deadline=None)
@given(spec=st.sampled_from(FAMS), d_in=st.integers(1, 3), width=st.integers(1, 3),
       seed=st.integers(0, 2 ** 16), scale=st.sampled_from([0.3, 3.0, 17.0, 20.0, 37.0, 50.0]),
       tied=st.booleans())
def test_certified_group_and_offdiag_bounds_hold(spec, d_in, width, seed, scale, tied):
    """issue 13 items 2, 16, 22: every certified group / off-diagonal bound holds within a few ulps
    (2n + 4 for group sums of n entries, as in tests/test_fuzz_reliability.py) at saturated outputs."""
    name, params = spec
    fam = families.get(name, **params)
    g = torch.Generator().manual_seed(seed)
    l1 = nn.Linear(d_in, width, dtype=torch.float64)
    l2 = nn.Linear(width, width, dtype=torch.float64)
    last = nn.Linear(width, fam.out_dim, dtype=torch.float64)
    if tied and d_in == width:
        l2.weight = l1.weight
    m = nn.Sequential(l1, nn.Tanh(), l2, nn.Tanh(), last)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        x = torch.randn(2, d_in, generator=g, dtype=torch.float64)
        top = float(m(x).abs().max())
        if top > 0:
            f = min(scale, CAP[name]) / top
            last.weight.mul_(f)
            last.bias.mul_(f)
    r = numeric.conditional_stats(m, x, fam, group_bounds=True)
    for gv in r.groups.values():
        n = int(gv["n_params"])
        for key in ("fisher", "var1", "var2"):
            for kind in ("d1", "c46"):
                lo, hi = gv.get(f"trace_{key}_lower_{kind}"), gv.get(f"trace_{key}_upper_{kind}")
                if lo is None:
                    continue
                assert _within(lo, gv[key], hi, 2 * n + 4), (name, key, kind, lo, gv[key], hi)
    names = [(k, tuple(v.shape)) for k, v in m.named_parameters()]
    pairs = [((names[0][0], (0,) * len(names[0][1])), (names[-1][0], (0,) * len(names[-1][1]))),
             ((names[-2][0], (0,) * len(names[-2][1])),) * 2]
    o = numeric.offdiag_stats(m, x, fam, pairs)
    zero = torch.zeros_like(o["var1_ij"])
    assert _within(zero, o["var1_ij"], o["offdiag_var1_upper"], 4)
    assert _within(zero, o["var2_ij"], o["offdiag_var2_upper"], 4)


@settings(deadline=None)
@given(C=st.integers(1, 3), P=st.integers(1, 40), seed=st.integers(0, 2 ** 16),
       scale=st.sampled_from([1e-12, 1e-3, 1.0, 1e3]))
def test_theorem_d1_contains_exact_traces_with_gram_rounding(C, P, seed, scale):
    """issue 13 item 22: with ``n_terms`` = P, Theorem D.1 contains the exact traces tr(ΣJJᵀ) =
    Σ_i u_iᵀΣu_i and tr(M̄UUᵀ) = Σ_i (u_i⊗u_i)ᵀM̄(u_i⊗u_i) (mpmath, 50 digits) of the given u_i, Σ, M̄,
    although JJᵀ, UUᵀ are rounded Gram sums (for C = 1 the bound is attained)."""
    from fishersym.bounds.trace import theorem_d1
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(P, C, generator=g, dtype=torch.float64) * scale
    A = torch.randn(C, C, generator=g, dtype=torch.float64)
    sigma = A @ A.T + 0.1 * torch.eye(C, dtype=torch.float64)
    Bm = torch.randn(C * C, C * C, generator=g, dtype=torch.float64)
    mbar = Bm @ Bm.T
    v = (u.unsqueeze(-1) * u.unsqueeze(-2)).reshape(P, C * C)
    JJ, UU = (u.T @ u).unsqueeze(0), (v.T @ v).unsqueeze(0)
    out = theorem_d1(JJ, UU, JJ, sigma.unsqueeze(0), mbar.unsqueeze(0), 1, n_terms=P)
    mS = mpmath.matrix(sigma.tolist())
    mM = mpmath.matrix(mbar.tolist())
    trI = trV = mpmath.mpf(0)
    for i in range(P):
        ui = mpmath.matrix(u[i].tolist())
        vi = mpmath.matrix([ui[a] * ui[b] for a in range(C) for b in range(C)])
        trI += (ui.T * mS * ui)[0]
        trV += (vi.T * mM * vi)[0]
    for key, ref in (("fisher", trI), ("var2", trI), ("var1", trV)):
        lo, hi = out[f"trace_{key}_lower_d1"].item(), out[f"trace_{key}_upper_d1"].item()
        assert mpmath.mpf(lo) <= ref <= mpmath.mpf(hi), (key, lo, float(ref), hi)
