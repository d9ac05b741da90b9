"""Numeric (torch) family quantities against the SymPy side and against brute force.

THEORY §3–§4.  Three independent routes are compared:
  * the torch closed forms of each family (and the generic nested forward-mode
    derivatives of the torch log-partition, ``ExponentialFamily.kappa4``);
  * the SymPy derivatives of the symbolic F, lambdified (mpmath) at the point;
  * brute-force moments from the definitions (tests/_brute.py: enumeration of
    the support with a hand-written pmf, or Gauss–Hermite quadrature).
All in float64, relative error ≤ 1e-10.  Directional forms are measured
relative to their natural scale when they cancel (uᵀΣu against ‖u‖²·max|Σ|,
the quartic forms against ‖u‖⁴·E‖r‖⁴): for the softmax u ∝ 𝟙 gives an exact
0 that brute force returns as ~1e-33.
"""
from __future__ import annotations

import math
from functools import cache

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fishersym import families
from fishersym.families.base import ExponentialFamily

from _brute import moments


CASES = [("gaussian", {"C": 2, "sigma2": 0.7}), ("gaussian", {"C": 1}), ("bernoulli", {}),
         ("categorical", {"C": 2}), ("categorical", {"C": 4}), ("poisson", {"C": 1}), ("poisson", {"C": 2}),
         ("gaussian_meanvar", {})]
IDS = [f"{n}-{'-'.join(f'{k}{v}' for k, v in p.items())}" for n, p in CASES]
RTOL = 1e-10


def rel(a, b, floor: float = 1e-300) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)))


def close(a, b, scale: float) -> bool:
    """Relative error ≤ 1e-10 w.r.t. the scale of the quantity (guards exact zeros)."""
    return float(np.max(np.abs(np.asarray(a, float) - np.asarray(b, float)))) <= RTOL * max(scale, 1e-300)


def point(name: str, C: int, data) -> np.ndarray:
    h = np.array(data.draw(st.lists(st.floats(-2.0, 2.0), min_size=C, max_size=C)))
    if name == "gaussian_meanvar":
        h[1] = -0.1 - abs(h[1])  # domain h₂ < 0
    if name == "poisson":
        h = np.clip(h, -2.0, 1.5)
    return h


@cache
def lambdified(name: str, items: tuple):
    fam = families.get(name, **dict(items))
    u = fam.direction_sym()
    f = {
        "F": fam.lambdify(fam.F_sym),
        "eta": fam.lambdify(fam.eta_sym),
        "Sigma": fam.lambdify(fam.sigma_sym),
        "kappa4": fam.lambdify(fam.contract4(fam.kappa4_sym, u), u),
        "m4": fam.lambdify(fam.contract4(fam.m4_sym, u), u),
        "mquad": fam.lambdify(fam.contract4(fam.M_sym, u), u),
    }
    return fam, f


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
@settings(max_examples=15)
@given(data=st.data())
def test_numeric_equals_lambdified_symbolic(name, params, data):
    fam, f0 = lambdified(name, tuple(sorted(params.items())))
    h = point(name, fam.C, data)
    u = np.array(data.draw(st.lists(st.floats(-1.5, 1.5), min_size=fam.C, max_size=fam.C)))
    ht, ut = torch.tensor(h), torch.tensor(u)

    def hp(fn):  # the symbolic side at 50 digits (float inputs are exact mpf values)
        def call(*args):
            with mpmath.workdps(50):
                return fn(*[mpmath.mpf(float(a)) for a in args])
        return call
    f = {k: hp(v) for k, v in f0.items()}
    F = float(f["F"](*h))
    assert rel(fam.log_partition(ht).item(), F) <= RTOL
    assert rel(fam.mean(ht).numpy(), np.array(f["eta"](*h), dtype=float).ravel()) <= RTOL
    S = np.array(f["Sigma"](*h).tolist(), dtype=float)
    assert close(fam.sigma(ht).numpy(), S, np.abs(S).max())
    sq = float(u @ S @ u)
    for key, method in [("kappa4", fam.kappa4), ("m4", fam.m4), ("mquad", fam.mquad)]:
        sym = float(f[key](*h, *u))
        # scale: the fourth-order moments are of size (uᵀΣu)² or M₄ itself
        scale = max(abs(sym), sq * sq, float(f["m4"](*h, *u)))
        assert close(method(ht, ut).item(), sym, scale), key
        generic = getattr(ExponentialFamily, key)(fam, ht, ut).item()
        assert close(generic, sym, scale), f"generic nested-jvp {key}"


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
@settings(max_examples=15)
@given(data=st.data())
def test_numeric_equals_brute_force(name, params, data):
    """Σ, κ₄(u,u,u,u) and M₄(u,u,u,u) against enumeration / quadrature, 1e-10 relative."""
    fam = families.get(name, **params)
    h = point(name, fam.C, data)
    u = np.array(data.draw(st.lists(st.floats(-1.5, 1.5), min_size=fam.C, max_size=fam.C)))
    bf = moments(fam, h, u)
    ht, ut = torch.tensor(h), torch.tensor(u)
    # scale of η: its size or the spread √Σ (quadrature returns ~1e-18 for an exact 0)
    eta_scale = max(np.abs(bf["eta"]).max(), math.sqrt(np.abs(bf["Sigma"]).max()))
    assert close(fam.mean(ht).numpy(), bf["eta"], eta_scale)
    assert close(fam.sigma(ht).numpy(), bf["Sigma"], np.abs(bf["Sigma"]).max())
    unorm2 = float(u @ u)
    assert close(fam.sigma_quad(ht, ut).item(), bf["sq"], max(bf["sq"], unorm2 * np.abs(bf["Sigma"]).max()))
    scale = max(bf["m4"], bf["sq"] ** 2, unorm2 ** 2 * bf["r4"])
    assert close(fam.m4(ht, ut).item(), bf["m4"], scale)
    assert close(fam.kappa4(ht, ut).item(), bf["kappa4"], scale)
    assert close(fam.mquad(ht, ut).item(), bf["mquad"], scale)


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_batched_directions_and_tensors(name, params):
    """(B, K, C) directions give the per-direction values; M̄ and M₄ tensors contract to them."""
    fam = families.get(name, **params)
    g = torch.Generator().manual_seed(1)
    h = torch.randn(3, fam.C, generator=g)
    if name == "gaussian_meanvar":
        h[:, 1] = -0.2 - h[:, 1].abs()
    u = torch.randn(3, 4, fam.C, generator=g)
    batched = fam.mquad(h, u)
    assert batched.shape == (3, 4)
    for b in range(3):
        for k in range(4):
            assert torch.allclose(batched[b, k], fam.mquad(h[b], u[b, k]), rtol=1e-12, atol=0)
    uu = torch.einsum("bka,bkc->bkac", u, u).reshape(3, 4, -1)
    via_mbar = torch.einsum("bki,bij,bkj->bk", uu, fam.mbar(h), uu)
    assert torch.allclose(via_mbar, batched, rtol=1e-10, atol=1e-12)
    via_m4 = torch.einsum("nabcd,na,nb,nc,nd->n", fam.m4_tensor(h), u[:, 0], u[:, 0], u[:, 0], u[:, 0])
    assert torch.allclose(via_m4, fam.m4(h, u[:, 0]), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- sampler
# Each comparison uses the CLT: |sample mean − expectation| ≤ z·sd/√n with z = 5.33,
# a two-sided normal tail of 1e-7 per comparison; a test makes at most 10 comparisons,
# so its false-alarm probability is ≤ 1e-6 (asymptotically; n = 200 000).
Z, NSAMP = 5.33, 200_000


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_sampler_moments(name, params):
    fam = families.get(name, **params)
    g = torch.Generator().manual_seed(12345)
    h = torch.randn(fam.C, generator=g) * 0.8
    if name == "gaussian_meanvar":
        h[1] = -0.3 - h[1].abs()
    u = torch.randn(fam.C, generator=g)
    bf = moments(fam, h.numpy(), u.numpy())
    t = fam.sample(h, NSAMP, generator=g)
    assert t.shape == (NSAMP, fam.C)
    r = t - torch.tensor(bf["eta"])
    S = torch.tensor(bf["Sigma"])
    for a in range(fam.C):  # E[t_a] = η_a, sd = √Σ_aa
        assert abs(float(r[:, a].mean())) <= Z * math.sqrt(S[a, a] / NSAMP)
    ur2 = (r @ u) ** 2  # E[(uᵀr)²] = uᵀΣu, Var = M₄(u⁴) − (uᵀΣu)²
    assert abs(float(ur2.mean()) - bf["sq"]) <= Z * math.sqrt(bf["mquad"] / NSAMP) + 1e-12
    ur4 = ur2 ** 2  # E[(uᵀr)⁴] = M₄(u⁴), Var = E(uᵀr)⁸ − M₄²
    assert abs(float(ur4.mean()) - bf["m4"]) <= Z * math.sqrt((bf["m8"] - bf["m4"] ** 2) / NSAMP) + 1e-12


def test_sampler_is_seeded_and_batched():
    fam = families.get("categorical", C=5)
    h = torch.randn(7, 5)
    a = fam.sample(h, 11, generator=torch.Generator().manual_seed(3))
    b = fam.sample(h, 11, generator=torch.Generator().manual_seed(3))
    assert a.shape == (11, 7, 5) and torch.equal(a, b)
    assert torch.all(a.sum(-1) == 1)


@pytest.mark.parametrize("name,params", [c for c in CASES if c[0] in ("bernoulli", "categorical", "poisson")])
def test_support_enumeration_matches_hand_written_pmf(name, params):
    fam = families.get(name, **params)
    h = torch.randn(2, fam.C)
    sup = fam.support(h)
    assert torch.allclose(sup.prob.sum(-1), torch.ones(2), atol=1e-13)
    from _brute import pmf_support
    for b in range(2):
        tb, pb = pmf_support(name, h[b].numpy())
        lookup = {tuple(x): p for x, p in zip(tb.tolist(), pb)}
        for x, p in zip(sup.t.tolist(), sup.prob[b].tolist()):
            assert p == pytest.approx(lookup.get(tuple(x), 0.0), rel=1e-11, abs=1e-300)
