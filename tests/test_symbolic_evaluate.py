"""Symbolic == brute force on random networks (THEORY §1–§3, §5).

The reference is independent of the symbolic engine and of the closed forms
of Lemma 3.1: fishersym.testing.brute enumerates the labels (Bernoulli,
categorical, truncated Poisson) or uses exact Gauss–Hermite quadrature
(Gaussians), differentiates log p(y|x;θ) by reverse-mode autograd per label,
and takes I = E[s²], V₁ = Var(s²)/N, V₂ = Var(−∂²ℓ)/N from the definitions.
"""
from __future__ import annotations


import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from fishersym import families, symbolic
from fishersym.testing.brute import brute_force as oracle
from fishersym.bounds.theorem41 import BOUND_KEYS, OPT_KEYS, SHARP_KEYS, violated_bounds

FAMILIES = {
    "gaussian": lambda: families.get("gaussian", C=1, sigma2=0.7, link="mean"),
    "gaussian2": lambda: families.get("gaussian", C=2, sigma2=1.3),
    "bernoulli": lambda: families.get("bernoulli"),
    "categorical": lambda: families.get("categorical", C=3),
    "poisson": lambda: families.get("poisson", C=1),
    "gaussian_meanvar": lambda: families.get("gaussian_meanvar"),
}
ACTS = symbolic.available_activations()


# ---------------------------------------------------------------------- brute force
def brute_force(net, fam, model, x, N):
    """{'fisher','var1','var2': {name: (B, *shape)}} from the definitions: the label-space oracle
    of fishersym.testing.brute (enumeration or Gauss–Hermite quadrature of the labels; variances
    of the per-label squared score and negative Hessian, both by reverse-mode autograd of log p)."""
    per = [oracle(model, x[b:b + 1], fam, N) for b in range(x.shape[0])]
    return {k: {n: torch.stack([getattr(o, k)[n] for o in per]) for n in per[0].fisher}
            for k in ("fisher", "var1", "var2")}


def _bounds_ok(got) -> list:
    """The certified bounds that fail somewhere (the result maps key → {name: tensor})."""
    return violated_bounds(got)


def _close(a: torch.Tensor, b: torch.Tensor, rtol=1e-10, floor: float = 0.0):
    """|a − b| ≤ rtol·(|b| + max|b|) + rtol·floor; ``floor`` is the natural scale of the key (a
    quantity that is exactly 0, such as V₂ of a last layer, has no scale of its own)."""
    scale = max(float(b.abs().max()), 1e-300)
    assert torch.allclose(a, b, rtol=rtol, atol=rtol * (scale + floor)), (a, b)


def natural(ref, key: str) -> float:
    """Natural scale of ``key`` in an oracle result: max I for I, (max I)² for the variances."""
    fmax = max(float(v.abs().max()) for v in ref["fisher"].values())
    return fmax if key == "fisher" else fmax ** 2


_DERIVED: dict = {}


def _derived(famkey, net, fam, N=4):
    """symbolic.derive of the [2, 2, 1] tanh net, once per family for the tests that share it."""
    if famkey not in _DERIVED:
        _DERIVED[famkey] = symbolic.derive(net, fam, n_samples=N)
    return _DERIVED[famkey]


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
    got = D.evaluate(model, x, optimised=False, extra=True)
    ref = brute_force(net, fam, model, x, N)
    for key in ("fisher", "var1", "var2"):
        for name in ref[key]:
            _close(got[key][name], ref[key][name], floor=natural(ref, key))
    # moment and cumulant forms agree numerically too
    for name in ref["var1"]:
        _close(got["var1_moment"][name], ref["var1"][name], floor=natural(ref, "var1"))
        _close(got["var1_cumulant"][name], ref["var1"][name], floor=natural(ref, "var1"))
    assert _bounds_ok(got) == []


@pytest.mark.parametrize("act", ACTS)
def test_every_activation_two_hidden_layers(act):
    """Each activation in a deeper net (curvature through two layers), Bernoulli output."""
    fam, net, model, x = _setup([2, 2, 2, 1], act, "bernoulli", seed=7)
    D = symbolic.derive(net, fam, n_samples=2)
    got = D.evaluate(model, x, optimised=False)
    ref = brute_force(net, fam, model, x, 2)
    for key in ref:
        for name in ref[key]:
            _close(got[key][name], ref[key][name], floor=natural(ref, key))


@pytest.mark.parametrize("famkey", sorted(FAMILIES))
def test_every_family_with_keys(famkey):
    """All result keys present with the documented shapes; bounds hold; symbolic closed-form
    bounds equal the numeric (certified) ones where the constants are exact."""
    fam, net, model, x = _setup([2, 2, 1], "tanh", famkey, seed=3, B=2)
    D = _derived(famkey, net, fam)
    got = D.evaluate(model, x, optimised=True, extra=True)
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
            _close(got[key][name], ref[key][name], floor=natural(ref, key))
    if not D.forms.lam_named:
        for k in BOUND_KEYS:
            for name in got[k]:
                _close(got[f"sym_{k}"][name], got[k][name], rtol=1e-9)


def test_against_numeric_engine():
    """Cross-check with fishersym.numeric.conditional_stats (another engineer's engine)."""
    from fishersym import numeric
    for famkey, act in (("bernoulli", "sigmoid"), ("categorical", "softplus"), ("gaussian", "tanh"),
                        ("poisson", "gelu")):
        fam, net, model, x = _setup([2, 2, 1], act, famkey, seed=11)
        D = symbolic.derive(net, fam, n_samples=3)
        got = D.evaluate(model, x)
        ref = numeric.conditional_stats(model, x, fam, n_samples=3)
        for key in ("fisher", "var1", "var2", *BOUND_KEYS):
            for name in got[key]:
                _close(got[key][name], ref[key][name], rtol=1e-9, floor=natural(ref, key.split("_")[0]))


def test_symbolic_n():
    """With N left symbolic, evaluate uses the n_samples given (V ∝ 1/N)."""
    fam, net, model, x = _setup([2, 2, 1], "sigmoid", "bernoulli", seed=5)
    D = symbolic.derive(net, fam)
    a = D.evaluate(model, x, n_samples=1, optimised=False)
    b = D.evaluate(model, x, n_samples=4, optimised=False)
    for name in a["var1"]:
        _close(4 * b["var1"][name], a["var1"][name])
        _close(b["fisher"][name], a["fisher"][name])
    ref = brute_force(net, fam, model, x, 4)
    for name in ref["var2"]:
        _close(b["var2"][name], ref["var2"][name], floor=natural(ref, "var2"))


def _independent_constants(fam, h1):
    """λ_min, λ_max of Σ and the Sym² extremes of M̄ = Cov_y[vec(r rᵀ)] (r = t − η), from the label
    space alone (enumeration / quadrature of fishersym.testing.brute.label_support) and dense eigh."""
    from fishersym.testing.brute import label_support
    t, w = label_support(fam, h1)
    r = t - (w[:, None] * t).sum(0)
    S = torch.einsum("y,ya,yb->ab", w, r, r)
    v = torch.einsum("ya,yb->yab", r, r).reshape(len(w), -1)
    vc = v - (w[:, None] * v).sum(0)
    Mbar = torch.einsum("y,yi,yj->ij", w, vc, vc)
    C = r.shape[1]
    cols = []                                           # orthonormal basis of Sym²(ℝ^C)
    for a in range(C):
        for b in range(a, C):
            e = torch.zeros(C, C, dtype=h1.dtype)
            e[a, b] = e[b, a] = 1.0 if a == b else 2 ** -0.5
            cols.append(e.reshape(-1))
    Q = torch.stack(cols, 1)
    ev_s, ev_m = torch.linalg.eigvalsh(S), torch.linalg.eigvalsh(Q.T @ Mbar @ Q)
    return ev_s[0], ev_s[-1], ev_m[0], ev_m[-1]


@pytest.mark.parametrize("famkey", sorted(FAMILIES))
def test_bounds_from_independently_computed_norms_and_constants(famkey):
    """Issue 11 (weak tests): the symbolic bounds against Theorem 4.1 written out here — ‖u_i‖², ‖w_i‖²
    by autograd of h = natural(model(x)) and the constants by dense eigenproblems of Σ and M̄ built from
    the label space — instead of against the shared theorem41_bounds and family constants."""
    from torch.func import hessian, jacrev
    fam, net, model, x = _setup([2, 2, 1], "tanh", famkey, seed=5, B=2)
    N = 4
    got = _derived(famkey, net, fam).evaluate(model, x)
    params = {k: v.detach() for k, v in model.named_parameters()}
    for b in range(x.shape[0]):
        h1 = fam.natural(model(x[b:b + 1]))[0].detach()
        s_min, s_max, m_min, m_max = _independent_constants(fam, h1)
        for name, p in params.items():
            def h_of(t, name=name, b=b):
                return fam.natural(functional_call(model, {**params, name: t}, (x[b:b + 1],)))[0]
            U = jacrev(h_of)(p).reshape(fam.out_dim, -1)
            W = torch.diagonal(hessian(h_of)(p).reshape(fam.out_dim, p.numel(), p.numel()), dim1=1, dim2=2)
            u2, w2 = (U ** 2).sum(0), (W ** 2).sum(0)
            want = {"fisher_lower": u2 * s_min, "fisher_upper": u2 * s_max,
                    "var1_lower": u2 ** 2 * m_min / N, "var1_upper": u2 ** 2 * m_max / N,
                    "var2_lower": w2 * s_min / N, "var2_upper": w2 * s_max / N}
            for k, v in want.items():
                g = got[k][name][b].reshape(-1)
                # certified constants are widened outward by O(C·ε) relative (families.constants)
                scale = 1e-9 * (float(v.abs().max()) + float(u2.max()) ** 2 * float(abs(m_max)) + 1e-300)
                assert torch.allclose(g, v, rtol=1e-9, atol=scale), (famkey, name, k, g, v)


def test_evaluate_returns_stats_result_like_conditional_stats():
    """Issue 11 item 5: Derivation.evaluate returns the StatsResult of numeric.conditional_stats, with
    the same derived keys (rel_sd, Cantelli) and per-module group sums; the groups are checked against
    sums taken here and against the numeric engine's groups."""
    from fishersym import numeric
    from fishersym.numeric.stats import StatsResult
    fam, net, model, x = _setup([2, 2, 1], "tanh", "categorical", seed=5, B=2)
    got = _derived("categorical", net, fam).evaluate(model, x, optimised=False)
    ref = numeric.conditional_stats(model, x, fam, n_samples=4)
    assert isinstance(got, StatsResult) and got.kind == "conditional" and got.path == "symbolic"
    assert got.n_samples == 4 and got.parameters == ref.parameters
    assert set(ref) <= set(got) | {"prob_neg2"}       # the exact P(Î₂ < 0) is the numeric engine's only
    for k in ("rel_sd1", "rel_sd2", "prob_neg2_upper"):
        for n in got.parameters:
            _close(got[k][n], ref[k][n], rtol=1e-9)
    assert set(got.groups) == set(ref.groups) == {"0", "2"}
    for g, names in got.group_members.items():
        d = got.groups[g]
        assert int(d["n_params"]) == sum(model.get_parameter(n).numel() for n in names)
        for k in ("fisher", "var1", "var2", "var1_upper"):
            want = sum(got[k][n].reshape(2, -1).sum(1) for n in names)
            _close(d[k], want)
            _close(d[k], ref.groups[g][k], rtol=1e-9)
        _close(d["rel_sd2"], d["var2"].sqrt() / d["fisher"])
    assert got.rows()[0]["name"] == "0.weight"


def test_evaluate_deprecated_optimise_keyword():
    """``optimise=`` (the old spelling) still works for one release, with a DeprecationWarning."""
    fam, net, model, x = _setup([2, 2, 1], "tanh", "bernoulli", seed=5, B=1)
    D = _derived("bernoulli", net, fam)
    with pytest.warns(DeprecationWarning, match="optimised="):
        old = D.evaluate(model, x, optimise=False)
    new = D.evaluate(model, x, optimised=False)
    assert "var1_upper_opt" not in old and set(old) == set(new)
    with pytest.raises(ValueError, match="disagree"):
        D.evaluate(model, x, optimised=False, optimise=True)
