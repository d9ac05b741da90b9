"""Monte Carlo estimators (THEORY §2, §9) against the closed forms (THEORY §3, §8).

R independent replicates of Î_k(θ_i|x) come from one batch holding the same input R times (every row
draws its own labels).  Tolerances are derived from the known variance: with z = Φ⁻¹(1 − α/(2m)),
α = 1e-6 and m the number of compared quantities (Bonferroni), under the normal approximation of the
mean of R i.i.d. replicates the false-alarm probability of each assertion block is ≤ 1e-6:
    |mean − I| ≤ z·√(V/R),    |s² − V| ≤ z·√((m̂₄ − s⁴)/R) + 1e-12,
with m̂₄ the empirical fourth central moment.  Seeds are fixed, so the tests are deterministic.
"""
from statistics import NormalDist

import pytest
import torch
from torch import nn

from fishersym.numeric import conditional_stats, dataset_stats, estimate

from test_numeric_helpers import make_family, small_mlp

ALPHA = 1e-6


def _z(m):
    return NormalDist().inv_cdf(1 - ALPHA / (2 * m))


@pytest.mark.parametrize("fam", ["categorical", "bernoulli", "gaussian", "poisson", "gaussian_meanvar"])
@pytest.mark.parametrize("est", ["I1", "I2"])
def test_mc_mean_and_variance(fam, est):
    family = make_family(fam)
    model = small_mlp(family.out_dim, seed=7, act=nn.Tanh, widths=(3,), scale=0.6)
    x0 = torch.randn(1, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    R, N = 20000, 3
    exact = conditional_stats(model, x0, family, n_samples=N)
    g = torch.Generator().manual_seed(11)
    # generic path: differentiates log_prob directly, independent of the closed forms
    e = estimate(model, x0.expand(R, -1), family, est, n_samples=N, generator=g, per_input=True,
                 path="generic", batch_size=R, progress=False)
    var_key = "var1" if est == "I1" else "var2"
    m = 2 * sum(v.numel() for v in e.values())
    z = _z(m)
    for n, samples in e.items():
        I, V = exact.fisher[n][0], exact[var_key][n][0]
        mean = samples.mean(0)
        assert bool(((mean - I).abs() <= z * (V / R).sqrt() + 1e-12).all()), (n, "mean")
        c = samples - mean
        s2 = (c * c).mean(0)
        m4 = (c ** 4).mean(0)
        assert bool(((s2 - V).abs() <= z * ((m4 - s2 * s2).clamp_min(0) / R).sqrt() + 1e-12).all()), (n, "var")
    if est == "I1":
        assert all(bool((v >= 0).all()) for v in e.values())  # Î₁ ≥ 0 surely (THEORY §6 item 5)


def test_fast_estimators_match_generic_with_same_labels():
    family = make_family("categorical")
    model = small_mlp(3, seed=2, act=nn.Sigmoid, widths=(4, 3))
    x = torch.randn(5, 2, dtype=torch.float64)
    for est in ("I1", "I2"):
        a = estimate(model, x, family, est, n_samples=4, generator=torch.Generator().manual_seed(3), progress=False)
        b = estimate(model, x, family, est, n_samples=4, generator=torch.Generator().manual_seed(3), path="generic",
                     progress=False)
        assert a.path == "fast" and b.path == "generic"
        for n in a:
            assert torch.allclose(a[n], b[n], rtol=1e-10, atol=1e-14), (est, n)
    y = torch.randint(0, 3, (5,))
    a = estimate(model, (x, y), family, "empirical", progress=False)
    b = estimate(model, [(x[:2], y[:2]), (x[2:], y[2:])], family, "empirical", path="generic", progress=False)
    for n in a:
        assert torch.allclose(a[n], b[n], rtol=1e-10, atol=1e-14), n


def test_dataset_iid_scheme_total_variance():
    """THEORY §8, scheme "iid": Var of the mean over M' i.i.d. inputs (labels resampled) is
    (1/M')[Var_q I + E_q v/N]; checked by simulating draws of inputs and labels."""
    family = make_family("bernoulli")
    model = small_mlp(1, seed=4, act=nn.Tanh, widths=(3,))
    data = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    Mp, N, R = 4, 2, 30000
    ds = dataset_stats(model, data, family, n_samples=N, scheme="iid", m_inputs=Mp, progress=False)
    g = torch.Generator().manual_seed(5)
    idx = torch.randint(0, 6, (R * Mp,), generator=g)
    e = estimate(model, data[idx], family, "I2", n_samples=N, generator=g, per_input=True, progress=False,
                 batch_size=R * Mp)
    m = 2 * sum(v.numel() for v in e.values())
    z = _z(m)
    for n, s in e.items():
        reps = s.reshape(R, Mp, *s.shape[1:]).mean(1)
        mean = reps.mean(0)
        c = reps - mean
        s2, m4 = (c * c).mean(0), (c ** 4).mean(0)
        assert bool(((mean - ds.fisher[n]).abs() <= z * (ds.var2[n] / R).sqrt() + 1e-12).all()), n
        assert bool(((s2 - ds.var2[n]).abs() <= z * ((m4 - s2 * s2).clamp_min(0) / R).sqrt() + 1e-12).all()), n


def test_dataset_all_scheme_matches_average_of_conditionals():
    family = make_family("poisson")
    model = small_mlp(1, seed=4, act=nn.Softplus, widths=(3,), scale=0.5)
    data = torch.randn(7, 2, dtype=torch.float64)
    ds = dataset_stats(model, [(data[:3], None), (data[3:], None)], family, n_samples=2, progress=False)
    cs = conditional_stats(model, data, family, n_samples=2)
    for n in ds.fisher:
        assert torch.allclose(ds.fisher[n], cs.fisher[n].mean(0), rtol=1e-12)
        assert torch.allclose(ds.var1[n], cs.var1[n].sum(0) / 49, rtol=1e-12)
        assert torch.allclose(ds.input_var[n], cs.fisher[n].var(0, unbiased=False), rtol=1e-9, atol=1e-15)
        assert bool((ds.input_var[n] <= ds.input_var_upper[n] * (1 + 1e-12)).all())  # Lemma 4.8
