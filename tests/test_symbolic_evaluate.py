"""Symbolic == brute force on random networks (THEORY §1–§3, §5).

The reference is independent of the symbolic engine and of the families'
closed forms: u_i from the autograd Jacobian of θ ↦ h = link(model(x)),
w_i from the diagonal of autograd Hessians, and the moments of t(y) from an
explicit enumeration of the label distribution (Bernoulli, categorical,
truncated Poisson), the Gaussian's known moments (fixed variance) or exact
Gauss–Hermite quadrature (learned variance):

    I = uᵀΣu,  V₁ = (E[(uᵀr)⁴] − I²)/N,  V₂ = wᵀΣw/N.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from fishersym import families, symbolic
from fishersym.bounds.theorem41 import BOUND_KEYS, OPT_KEYS, SHARP_KEYS, check_bounds

FAMILIES = {
    "gaussian": lambda: families.get("gaussian", C=1, sigma2=0.7, link="mean"),
    "gaussian2": lambda: families.get("gaussian", C=2, sigma2=1.3),
    "bernoulli": lambda: families.get("bernoulli"),
    "categorical": lambda: families.get("categorical", C=3),
    "poisson": lambda: families.get("poisson", C=1),
    "gaussian_meanvar": lambda: families.get("gaussian_meanvar"),
}
ACTS = ["sigmoid", "tanh", "softplus", "relu", "leaky_relu", "identity", "gelu", "silu"]


# ---------------------------------------------------------------------- brute force
def _moments(fam, h: torch.Tensor):
    """(support statistics t (S, C), probabilities (S,)) or None, plus a moment function."""
    name = fam.name
    if name == "bernoulli":
        p = torch.sigmoid(h[0])
        return torch.tensor([[0.0], [1.0]], dtype=h.dtype), torch.stack([1 - p, p])
    if name == "categorical":
        return torch.eye(fam.C, dtype=h.dtype), torch.softmax(h, 0)
    if name == "poisson":
        lam = torch.exp(h[0])
        k = torch.arange(0, int(lam.item() * 10 + 60), dtype=h.dtype)
        logp = k * torch.log(lam) - lam - torch.lgamma(k + 1)
        return k.unsqueeze(-1), logp.exp()
    if name == "gaussian_meanvar":
        var = -0.5 / h[1]
        mu = h[0] * var
        nodes, weights = np.polynomial.hermite_e.hermegauss(12)  # exact to degree 23
        y = mu + var.sqrt() * torch.tensor(nodes, dtype=h.dtype)
        wts = torch.tensor(weights / math.sqrt(2 * math.pi), dtype=h.dtype)
        return torch.stack([y, y * y], -1), wts
    return None


def brute_force(net, fam, model, x, N):
    """{'fisher','var1','var2': {name: (B, *shape)}} by autograd + enumeration."""
    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}
    shapes = {n: p.shape for n, p in params.items()}
    sizes = [p.numel() for p in params.values()]
    flat0 = torch.cat([p.reshape(-1) for p in params.values()])

    def unflat(v):
        out, i = {}, 0
        for n, s in zip(names, sizes):
            out[n] = v[i:i + s].reshape(shapes[n])
            i += s
        return out

    res = {k: {n: torch.zeros((x.shape[0], *shapes[n]), dtype=torch.float64) for n in names}
           for k in ("fisher", "var1", "var2")}
    for b in range(x.shape[0]):
        def h_of(v):
            return fam.link(functional_call(model, unflat(v), (x[b:b + 1],)))[0]
        h = h_of(flat0)
        J = torch.autograd.functional.jacobian(h_of, flat0)  # (C, P)
        Wd = torch.stack([torch.diagonal(torch.autograd.functional.hessian(lambda v, c=c: h_of(v)[c], flat0))
                          for c in range(fam.C)])  # (C, P)
        sup = _moments(fam, h)
        if sup is None:  # fixed-variance Gaussian: r ~ N(0, σ²I)
            s2 = fam.sigma2
            Sigma = s2 * torch.eye(fam.C, dtype=torch.float64)
            nu = (J * J).sum(0)
            m4 = 3 * s2 ** 2 * nu ** 2
        else:
            t, pr = sup
            eta = (pr.unsqueeze(-1) * t).sum(0)
            r = t - eta
            Sigma = torch.einsum("s,sa,sb->ab", pr, r, r)
            proj = r @ J  # (S, P): uᵀr per support point
            m4 = (pr.unsqueeze(-1) * proj ** 4).sum(0)
        fisher = torch.einsum("ap,ab,bp->p", J, Sigma, J)
        var1 = (m4 - fisher ** 2) / N
        var2 = torch.einsum("ap,ab,bp->p", Wd, Sigma, Wd) / N
        for key, vec in (("fisher", fisher), ("var1", var1), ("var2", var2)):
            parts = unflat(vec)
            for n in names:
                res[key][n][b] = parts[n]
    return res


def _bounds_ok(got) -> list:
    """check_bounds per parameter tensor (the result maps key → {name: tensor})."""
    bad = []
    for name in got["fisher"]:
        bad += [f"{name}:{k}" for k in check_bounds({k: v[name] for k, v in got.items() if isinstance(v, dict)})]
    return bad


def _close(a: torch.Tensor, b: torch.Tensor, rtol=1e-10):
    scale = max(float(b.abs().max()), 1e-300)
    assert torch.allclose(a, b, rtol=rtol, atol=rtol * scale), (a, b)


def _setup(widths, act, famkey, seed, B=3):
    fam = FAMILIES[famkey]()
    widths = list(widths[:-1]) + [fam.out_dim]
    net = symbolic.mlp(widths, act)
    model = net.torch_module(seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.8 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(B, widths[0], generator=g, dtype=torch.float64)
    return fam, net, model, x


# ---------------------------------------------------------------------- tests
@settings(max_examples=14, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(famkey=st.sampled_from(sorted(FAMILIES)), act=st.sampled_from(ACTS),
       hidden=st.lists(st.integers(1, 2), min_size=0, max_size=2), d_in=st.integers(1, 2),
       N=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_symbolic_equals_brute_force(famkey, act, hidden, d_in, N, seed):
    fam, net, model, x = _setup([d_in, *hidden, 1], act, famkey, seed)
    D = symbolic.derive(net, fam, n_samples=N)
    got = D.evaluate(model, x, optimise=False, extra=True)
    ref = brute_force(net, fam, model, x, N)
    for key in ("fisher", "var1", "var2"):
        for name in ref[key]:
            _close(got[key][name], ref[key][name])
    # moment and cumulant forms agree numerically too
    for name in ref["var1"]:
        _close(got["var1_moment"][name], ref["var1"][name])
        _close(got["var1_cumulant"][name], ref["var1"][name])
    assert _bounds_ok(got) == []


@pytest.mark.parametrize("act", ACTS)
def test_every_activation_two_hidden_layers(act):
    """Each activation in a deeper net (curvature through two layers), Bernoulli output."""
    fam, net, model, x = _setup([2, 2, 2, 1], act, "bernoulli", seed=7)
    D = symbolic.derive(net, fam, n_samples=2)
    got = D.evaluate(model, x, optimise=False)
    ref = brute_force(net, fam, model, x, 2)
    for key in ref:
        for name in ref[key]:
            _close(got[key][name], ref[key][name])


@pytest.mark.parametrize("famkey", sorted(FAMILIES))
def test_every_family_with_keys(famkey):
    """All result keys present with the documented shapes; bounds hold; symbolic closed-form
    bounds equal the numeric (certified) ones where the constants are exact."""
    fam, net, model, x = _setup([2, 2, 1], "tanh", famkey, seed=3, B=2)
    D = symbolic.derive(net, fam, n_samples=4)
    got = D.evaluate(model, x, optimise=True, extra=True)
    expected = set(BOUND_KEYS) | set(OPT_KEYS) | {"fisher", "var1", "var2"}
    if fam.shift_invariant:
        expected |= set(SHARP_KEYS)
    assert expected <= set(got)
    for n, p in model.named_parameters():
        assert got["fisher"][n].shape == (2, *p.shape)
    assert _bounds_ok(got) == []
    ref = brute_force(net, fam, model, x, 4)
    for key in ref:
        for name in ref[key]:
            _close(got[key][name], ref[key][name])
    if not D.forms.lam_named:
        for k in BOUND_KEYS:
            for name in got[k]:
                _close(got[f"sym_{k}"][name], got[k][name], rtol=1e-9)


def test_against_numeric_engine():
    """Cross-check with fishersym.numeric.conditional_stats (another engineer's engine)."""
    numeric = pytest.importorskip("fishersym.numeric")
    if not hasattr(numeric, "conditional_stats"):
        pytest.skip("fishersym.numeric.conditional_stats is not available yet")
    for famkey, act in (("bernoulli", "sigmoid"), ("categorical", "softplus"), ("gaussian", "tanh"),
                        ("poisson", "gelu")):
        fam, net, model, x = _setup([2, 2, 1], act, famkey, seed=11)
        D = symbolic.derive(net, fam, n_samples=3)
        got = D.evaluate(model, x)
        try:
            ref = numeric.conditional_stats(model, x, fam, n_samples=3)
        except TypeError:
            ref = numeric.conditional_stats(model, fam, x, n_samples=3)
        for key in ("fisher", "var1", "var2", *BOUND_KEYS):
            for name in got[key]:
                _close(got[key][name], ref[key][name], rtol=1e-9)


def test_symbolic_n():
    """With N left symbolic, evaluate uses the n_samples given (V ∝ 1/N)."""
    fam, net, model, x = _setup([2, 2, 1], "sigmoid", "bernoulli", seed=5)
    D = symbolic.derive(net, fam)
    a = D.evaluate(model, x, n_samples=1, optimise=False)
    b = D.evaluate(model, x, n_samples=4, optimise=False)
    for name in a["var1"]:
        _close(4 * b["var1"][name], a["var1"][name])
        _close(b["fisher"][name], a["fisher"][name])
    ref = brute_force(net, fam, model, x, 4)
    for name in ref["var2"]:
        _close(b["var2"][name], ref["var2"][name])
