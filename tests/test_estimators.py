"""Correctness of the estimator catalogue (issue 10; THEORY §8, §9, §13).

Every exact mean and variance of :mod:`fishersym.estimators` (all 11 estimators, schemes "all" and
"iid") is compared with the independent oracle of ``tests/_estimator_oracle.py``: per-label scores
and Hessians by autograd of log-densities written out there, and exact enumeration over labels,
probes and drawn-input tuples (Gauss–Hermite quadrature for Gaussian labels and probes, exact for
the polynomial degrees involved; Poisson truncated with tail mass < 1e-25).  The exact checks are at
rtol 1e-10.  Monte Carlo checks (``mc_check``) have a false-alarm probability ≤ 1e-6 per check under
the normal approximation of the sample means, with tolerances from the exact variance and the exact
fourth central moment of the draw.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.func import grad, vmap

import fishersym.estimators as fe
from _estimator_oracle import Oracle, compare_exact, gaussian_probe_draws, make_case, mc_check, support_check

ALL = ["squared_score", "batched_squared_gradient", "neg_hessian", "output_hutchinson_gaussian",
       "output_hutchinson_rademacher", "batched_output_hutchinson_gaussian",
       "batched_output_hutchinson_rademacher", "param_hutchinson", "exact_over_labels", "empirical",
       "batched_empirical"]
CASES = ["cat3", "bernoulli", "gaussian", "poisson", "meanvar"]

_ANALYSES: dict[str, fe.Analysis] = {}


def analysis(name: str) -> fe.Analysis:
    """fe.analyse of the whole catalogue on one case (cached; the Cholesky warnings of the
    non-softmax families are tested in test_rademacher_cholesky_is_announced)."""
    if name not in _ANALYSES:
        c = make_case(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            _ANALYSES[name] = fe.analyse(c.model, c.data, c.family)
    return _ANALYSES[name]


def var_scale(r) -> float:
    """Rounding scale of a variance: (max |mean|)²."""
    return float(r["mean"].abs().max()) ** 2


def test_catalogue_names():
    assert fe.names() == ALL


# ----------------------------------------------------------------------------------------------------
# scheme "all": exact mean, variance, bias and unbiasedness against enumeration
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("est", ALL)
def test_all_scheme_exact(case, est):
    c, a = make_case(case), analysis(case)
    o = c.oracle
    r = o.moments(est)
    target = o.target()
    fails = compare_exact(o.flat(a.variance(est)), r["var"], f"{case}/{est} variance", scale=var_scale(r))
    fails += compare_exact(o.flat(a.mean(est)), r["mean"], f"{case}/{est} mean")
    fails += compare_exact(o.flat(a.target("all")), target, f"{case} target Σ_m I_m")
    fails += compare_exact(o.flat(a.bias(est)), r["mean"] - target, f"{case}/{est} bias",
                           scale=float(target.abs().max()))
    if not fe.get(est).biased:          # the unbiasedness claim, from the enumeration itself
        fails += compare_exact(r["mean"], target, f"{case}/{est} oracle mean = target")
    assert not fails, "\n".join(fails)


def test_all_scheme_public_functions():
    """fe.variance / fe.mean / fe.bias (the documented entry points) give the same exact values."""
    c = make_case("cat3")
    o = c.oracle
    fails = []
    for est in ("batched_squared_gradient", "output_hutchinson_rademacher", "batched_empirical"):
        r = o.moments(est)
        fails += compare_exact(o.flat(fe.variance(c.model, c.data, c.family, est)), r["var"], est,
                               scale=var_scale(r))
        fails += compare_exact(o.flat(fe.mean(c.model, c.data, c.family, est)), r["mean"], est)
        fails += compare_exact(o.flat(fe.bias(c.model, c.data, c.family, est)), r["mean"] - o.target(), est,
                               scale=float(o.target().abs().max()))
    # label-free data for the label-sampling estimators
    r = o.moments("squared_score")
    fails += compare_exact(o.flat(fe.variance(c.model, c.x, c.family, "squared_score")), r["var"], "x only",
                           scale=var_scale(r))
    assert not fails, "\n".join(fails)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_streamed_batches_exact(batch_size):
    """The one-pass moments merged over several batches (cross terms across batches, the merged
    central moments of the observed scores) give the same exact values, schemes "all" and "iid"."""
    c = make_case("cat3")
    o = c.oracle
    ests = [e for e in ALL if e != "param_hutchinson"]
    a = fe.analyse(c.model, c.data, c.family, ests, batch_size=batch_size)
    fails = []
    for est in ests:
        r, ri = o.moments(est), o.iid_moments(est, 2)
        fails += compare_exact(o.flat(a.variance(est)), r["var"], f"{est} all", scale=var_scale(r))
        fails += compare_exact(o.flat(a.mean(est)), r["mean"], f"{est} all mean")
        fails += compare_exact(o.flat(a.variance(est, scheme="iid", m_inputs=2)), ri["var"], f"{est} iid",
                               scale=var_scale(ri))
        fails += compare_exact(o.flat(a.mean(est, scheme="iid", m_inputs=2)), ri["mean"], f"{est} iid mean")
    s = make_case("small")
    a = fe.analyse(s.model, [(s.x[:2], s.y[:2]), (s.x[2:], s.y[2:])], s.family, ["param_hutchinson"])
    r, ri = s.oracle.moments("param_hutchinson"), s.oracle.iid_moments("param_hutchinson", 2)
    fails += compare_exact(s.oracle.flat(a.variance("param_hutchinson")), r["var"], "param_hutchinson list",
                           scale=var_scale(r))
    fails += compare_exact(s.oracle.flat(a.variance("param_hutchinson", scheme="iid", m_inputs=2)), ri["var"],
                           "param_hutchinson list iid", scale=var_scale(ri))
    assert not fails, "\n".join(fails)


@pytest.mark.parametrize("est", ["squared_score", "batched_squared_gradient", "neg_hessian",
                                 "output_hutchinson_rademacher", "batched_output_hutchinson_rademacher"])
def test_all_scheme_two_samples(est):
    """n_samples = 2: the average of two independent draws, enumerated over all pairs of draws."""
    c, a = make_case("cat3"), analysis("cat3")
    o = c.oracle
    r = o.moments(est, n_samples=2)
    fails = compare_exact(o.flat(a.variance(est, n_samples=2)), r["var"], est, scale=var_scale(r))
    assert not fails, "\n".join(fails)


def test_param_hutchinson_oracle_paths_agree():
    """The two oracle paths for param_hutchinson (enumeration of all 2^P probes; Σ_{j≠i} F_ij² from
    pairwise independence, used for the P = 21 net) agree, so the P = 21 check is sound."""
    o = make_case("small").oracle
    en, fo = o.param_hutchinson_moments([0, 1, 2]), o.param_hutchinson_formula([0, 1, 2])
    fails = compare_exact(en["var"], fo["var"], "var", scale=var_scale(fo))
    fails += compare_exact(en["mean"], fo["mean"], "mean")
    vals = o.param_hutchinson_values([0, 1, 2])
    fails += compare_exact(vals.mean(0), fo["mean"], "mean of the atoms")
    assert not fails, "\n".join(fails)


# ----------------------------------------------------------------------------------------------------
# scheme "iid": M' inputs drawn i.i.d. — every index tuple enumerated
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("est", ALL)
def test_iid_scheme_exact(case, est):
    if est == "param_hutchinson" and case == "cat3":
        case = "small"                  # all 2^12 probes per index tuple (P = 21 is the "all" check)
    c, a = make_case(case), analysis(case)
    o = c.oracle
    fails = []
    for m_inputs in (1, 2):
        r = o.iid_moments(est, m_inputs)
        fails += compare_exact(o.flat(a.variance(est, scheme="iid", m_inputs=m_inputs)), r["var"],
                               f"{case}/{est} iid M'={m_inputs} variance", scale=var_scale(r))
        fails += compare_exact(o.flat(a.mean(est, scheme="iid", m_inputs=m_inputs)), r["mean"],
                               f"{case}/{est} iid M'={m_inputs} mean")
        ibar = o.target() / o.M
        fails += compare_exact(o.flat(a.bias(est, scheme="iid", m_inputs=m_inputs)), r["mean"] - ibar,
                               f"{case}/{est} iid bias", scale=float(ibar.abs().max()))
        if not fe.get(est).biased:
            fails += compare_exact(r["mean"], ibar, f"{case}/{est} iid oracle mean = Ī")
    assert not fails, "\n".join(fails)


def test_iid_scheme_default_m_and_public_function():
    """m_inputs=None means M' = M (27 index tuples for M = 3); fe.variance(scheme="iid") agrees."""
    c, a = make_case("cat3"), analysis("cat3")
    o = c.oracle
    fails = []
    for est in ("batched_squared_gradient", "batched_empirical", "output_hutchinson_gaussian"):
        r = o.iid_moments(est, 3)
        fails += compare_exact(o.flat(a.variance(est, scheme="iid")), r["var"], est, scale=var_scale(r))
        fails += compare_exact(o.flat(fe.variance(c.model, c.data, c.family, est, scheme="iid", m_inputs=3)),
                               r["var"], est, scale=var_scale(r))
        fails += compare_exact(o.flat(fe.mean(c.model, c.data, c.family, est, scheme="iid")), r["mean"], est)
    assert not fails, "\n".join(fails)


@pytest.mark.parametrize("est", [e for e in ALL if "gaussian" not in e])
def test_iid_scheme_more_draws_than_inputs(est):
    """M' = 4 > M = 3 (every input drawn more than once in some tuples): all 81 index tuples."""
    case = "small" if est == "param_hutchinson" else "cat3"
    c, a = make_case(case), analysis(case)
    o = c.oracle
    r = o.iid_moments(est, 4)
    fails = compare_exact(o.flat(a.variance(est, scheme="iid", m_inputs=4)), r["var"], est, scale=var_scale(r))
    fails += compare_exact(o.flat(a.mean(est, scheme="iid", m_inputs=4)), r["mean"], est)
    assert not fails, "\n".join(fails)


def test_frozen_parameters():
    """Parameters with requires_grad=False are left out of every result, and the others are exact."""
    from _estimator_oracle import Oracle, _net
    c = make_case("cat3")
    net = _net(2, 3, 3, 9)
    net[0].weight.requires_grad_(False)
    o = Oracle(net, c.x, c.fam, c.y)
    a = fe.analyse(net, c.data, c.family)
    fails = []
    for est in ALL:
        r = o.moments(est)
        var = a.variance(est)
        assert sorted(var) == sorted(o.names) == ["0.bias", "2.bias", "2.weight"]
        fails += compare_exact(o.flat(var), r["var"], est, scale=var_scale(r))
        fails += compare_exact(o.flat(a.mean(est)), r["mean"], est)
    d = fe.sample(net, c.data, c.family, "batched_squared_gradient", generator=torch.Generator().manual_seed(0))
    assert sorted(d) == sorted(o.names)
    fails += support_check(o.flat(d), o.moments("batched_squared_gradient")["values"], "frozen draw")
    assert not fails, "\n".join(fails)


def test_iid_scheme_two_samples():
    c, a = make_case("cat3"), analysis("cat3")
    o = c.oracle
    fails = []
    for est in ("batched_squared_gradient", "squared_score", "output_hutchinson_rademacher"):
        r = o.iid_moments(est, 2, n_samples=2)
        fails += compare_exact(o.flat(a.variance(est, n_samples=2, scheme="iid", m_inputs=2)), r["var"], est,
                               scale=var_scale(r))
    assert not fails, "\n".join(fails)


# ----------------------------------------------------------------------------------------------------
# fe.sample is a faithful draw (categorical: every draw is an atom of the exact distribution, and
# the draws' mean and spread agree with it)
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("est,case,R", [("squared_score", "cat3", 200),
                                        ("batched_squared_gradient", "cat3", 200),
                                        ("output_hutchinson_rademacher", "cat3", 200),
                                        ("param_hutchinson", "small", 200),
                                        ("neg_hessian", "cat3", 60)])
def test_sample_is_faithful(est, case, R):
    """R seeded draws of fe.sample: each must lie on the exact support (enumerated atoms), and
    mc_check (false alarm ≤ 1e-6, normal approximation) compares their mean and mean squared
    deviation with the exact mean, variance and fourth central moment."""
    c = make_case(case)
    o = c.oracle
    idx = list(range(o.M))
    if est == "param_hutchinson":
        r = o.param_hutchinson_moments(idx)
        values = o.param_hutchinson_values(idx)
    else:
        r = o.moments(est)
        values = r["values"]
    draws, fails = [], []
    for k in range(R):
        d = o.flat(fe.sample(c.model, c.x, c.family, est, generator=torch.Generator().manual_seed(1000 + k)))
        if k < 40:
            fails += support_check(d, values, f"{est} draw {k}")
        draws.append(d)
    fails += mc_check(torch.stack(draws), r["mean"], r["var"], r["mu4"], f"fe.sample {est}")
    assert not fails, "\n".join(fails)


@pytest.mark.parametrize("case", CASES)
def test_sample_deterministic_estimators(case):
    """exact_over_labels (C probed backward passes through the family's factor L) and the
    observed-label estimators: fe.sample equals the exact (deterministic) value."""
    c = make_case(case)
    o = c.oracle
    fails = []
    for est in ("empirical", "batched_empirical", "exact_over_labels"):
        d = o.flat(fe.sample(c.model, c.data, c.family, est, generator=torch.Generator().manual_seed(0)))
        fails += compare_exact(d, o.moments(est)["mean"], f"{case}: fe.sample {est}")
    assert not fails, "\n".join(fails)


@pytest.mark.parametrize("case,est,n", [("cat3", "squared_score", 2), ("cat3", "batched_squared_gradient", 2),
                                        ("cat3", "batched_output_hutchinson_rademacher", 2),
                                        ("cat3", "neg_hessian", 1),
                                        ("meanvar", "output_hutchinson_rademacher", 1),
                                        ("meanvar", "batched_output_hutchinson_rademacher", 1),
                                        ("gaussian", "batched_output_hutchinson_rademacher", 1),
                                        ("bernoulli", "batched_squared_gradient", 1),
                                        ("poisson", "output_hutchinson_rademacher", 1)])
def test_sample_lies_on_support(case, est, n):
    """Draws (n_samples = n) are atoms of the enumerated distribution of the average of n draws: for
    the Gaussian families this checks the orientation of the Cholesky factor (ξ = Lε with the
    lower-triangular L of Σ = LLᵀ) that the exact variance assumes."""
    c = make_case(case)
    o = c.oracle
    values = o.moments(est, n_samples=n)["values"]
    fails = []
    for k in range(4):
        d = o.flat(fe.sample(c.model, c.x, c.family, est, n_samples=n, generator=torch.Generator().manual_seed(k)))
        fails += support_check(d, values, f"{case}/{est} n={n} draw {k}")
    assert not fails, "\n".join(fails)


# ----------------------------------------------------------------------------------------------------
# continuous and unbounded families: Monte Carlo from fe.sample and from a sampler written here
# ----------------------------------------------------------------------------------------------------
def _own_draws(o, fam, est: str, R: int, seed: int) -> torch.Tensor:
    """R draws of ``est`` over all inputs of oracle ``o``: labels drawn here (torch.randn /
    torch.poisson from the written-out rates), scores by autograd of the written-out log-density."""
    g = torch.Generator().manual_seed(seed)
    G = []
    for m in range(o.M):
        out = o.output(o.theta, o.x[m]).detach()
        if fam.kind == "gaussian":
            ys = out + math.sqrt(fam.sigma2) * torch.randn(R, fam.C, generator=g, dtype=torch.float64)
        elif fam.kind == "poisson":
            ys = torch.poisson(torch.exp(out).expand(R, 1).contiguous(), generator=g)
        else:
            raise ValueError(fam.kind)
        G.append(vmap(grad(o._logp(m)), in_dims=(None, 0))(o.theta, ys))
    G = torch.stack(G)                                      # (M, R, P)
    return (G * G).sum(0) if est == "squared_score" else G.sum(0) ** 2


@pytest.mark.parametrize("case", ["gaussian", "poisson"])
@pytest.mark.parametrize("est", ["squared_score", "batched_squared_gradient"])
def test_monte_carlo_continuous(case, est):
    """Gaussian (C = 2, σ² = 0.5) and Poisson labels: the exact moments (quadrature with K = 5
    nodes, exact to degree 9 — the fourth moment of s² has degree 8; truncated Poisson sums) agree
    with 20 000 draws of the sampler written here and with 100 seeded draws of fe.sample
    (mc_check: false alarm ≤ 1e-6 each); and the package's exact mean and variance equal the oracle's."""
    c = make_case(case, k_nodes=5)
    o = c.oracle
    r = o.moments(est)
    a = analysis(case)
    fails = compare_exact(o.flat(a.variance(est)), r["var"], f"{case}/{est} variance (K=5)", scale=var_scale(r))
    fails += mc_check(_own_draws(o, c.fam, est, 20000, seed=11), r["mean"], r["var"], r["mu4"],
                      f"{case}/{est} own sampler")
    draws = torch.stack([o.flat(fe.sample(c.model, c.x, c.family, est, generator=torch.Generator().manual_seed(k)))
                         for k in range(100)])
    fails += mc_check(draws, r["mean"], r["var"], r["mu4"], f"{case}/{est} fe.sample")
    assert not fails, "\n".join(fails)


@pytest.mark.parametrize("batched", [False, True])
def test_monte_carlo_gaussian_probes(batched):
    """Gaussian probes sampled here agree with the quadrature oracle (K = 5: exact fourth moments)
    and with the package's exact variance (2I² per input, plus the cross term when batched)."""
    est = ("batched_" if batched else "") + "output_hutchinson_gaussian"
    c = make_case("cat3", k_nodes=5)
    o = c.oracle
    idx = [0, 1]
    r = o.moments(est, idx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        v = o.flat(fe.variance(c.model, (c.x[idx], c.y[idx]), c.family, est))
    fails = compare_exact(v, r["var"], est, scale=var_scale(r))
    fails += mc_check(gaussian_probe_draws(o, idx, 20000, 5, batched), r["mean"], v, r["mu4"], est)
    assert not fails, "\n".join(fails)


# ----------------------------------------------------------------------------------------------------
# the √2 claim, costs
# ----------------------------------------------------------------------------------------------------
def test_batched_relative_sd_tends_to_sqrt2():
    """M copies of one input, N = 1: rel² = (v + 2(M−1)I²)/(M I²) → 2 (THEORY §13), with v = Var s²
    and I = E s² from the enumeration; |rel² − 2| = |v/I² − 2|/M shrinks like 1/M."""
    c = make_case("cat3")
    o = c.oracle
    r1 = o.moments("squared_score", [0])
    I, v = r1["mean"], r1["var"]
    keep = I > 1e-6 * float(I.max())
    prev = None
    for M in (1, 4, 16, 64):
        a = fe.analyse(c.model, c.x[:1].repeat(M, 1), c.family, ["batched_squared_gradient"])
        rel = o.flat(a.rel_se("batched_squared_gradient"))
        want = ((v + 2 * (M - 1) * I * I) / (M * I * I)).sqrt()
        fails = compare_exact(rel[keep], want[keep], f"rel_se at M={M}")
        assert not fails, fails
        gap = (rel[keep] ** 2 - 2).abs()
        assert torch.allclose(gap, (v / I ** 2 - 2).abs()[keep] / M, rtol=1e-8)
        if prev is not None:
            assert bool((gap <= prev / 3.99).all())
        prev = gap
    # |rel − √2| = |rel² − 2|/(rel + √2) ≤ |v/I² − 2|/(64√2) at M = 64
    bound = (v / I ** 2 - 2).abs()[keep] / (64 * math.sqrt(2))
    assert bool(((rel[keep] - math.sqrt(2)).abs() <= bound * (1 + 1e-9)).all())


def test_rel_se_includes_the_bias():
    """rel_se = √(Var + bias²)/target per parameter (scheme "iid", M' = 2), from the enumeration."""
    c, a = make_case("cat3"), analysis("cat3")
    o = c.oracle
    ibar = o.target() / o.M
    fails = []
    for est in ("empirical", "batched_empirical", "squared_score"):
        r = o.iid_moments(est, 2)
        want = ((r["var"] + (r["mean"] - ibar) ** 2).sqrt()) / ibar
        fails += compare_exact(o.flat(a.rel_se(est, scheme="iid", m_inputs=2)), want, est)
    assert not fails, "\n".join(fails)


def test_costs_per_input():
    C, N = 3, 5
    want = {"squared_score": N, "batched_squared_gradient": N, "neg_hessian": C + N,
            "output_hutchinson_gaussian": N, "output_hutchinson_rademacher": N,
            "batched_output_hutchinson_gaussian": N, "batched_output_hutchinson_rademacher": N,
            "param_hutchinson": 2 * N}
    for est, w in want.items():
        assert fe.get(est).cost(C, N) == w, est
    for est, w in {"exact_over_labels": C, "empirical": 1, "batched_empirical": 1}.items():
        assert fe.get(est).cost(C, 1) == w, est
    a = analysis("cat3")
    assert a.cost("neg_hessian", 2) == 3 * (3 + 2)
    assert a.cost("squared_score", 2, "iid", 7) == 7 * 2


# ----------------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------------
def test_unknown_estimator_lists_catalogue():
    c = make_case("cat3")
    for call in (lambda: fe.get("fisher_magic"),
                 lambda: fe.variance(c.model, c.data, c.family, "fisher_magic"),
                 lambda: fe.sample(c.model, c.data, c.family, "fisher_magic"),
                 lambda: fe.analyse(c.model, c.data, c.family, ["squared_score", "fisher_magic"])):
        with pytest.raises(ValueError) as ei:
            call()
        msg = str(ei.value)
        assert "fisher_magic" in msg and all(n in msg for n in ALL), msg


@pytest.mark.parametrize("est", ["exact_over_labels", "empirical", "batched_empirical"])
def test_deterministic_estimators_refuse_n_samples(est):
    c = make_case("cat3")
    with pytest.raises(ValueError, match="n_samples"):
        fe.variance(c.model, c.data, c.family, est, n_samples=2)
    with pytest.raises(ValueError, match="n_samples"):
        fe.sample(c.model, c.data, c.family, est, n_samples=2)
    with pytest.raises(ValueError, match="n_samples"):
        analysis("cat3").variance(est, 2)


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_bad_n_samples(n):
    c = make_case("cat3")
    with pytest.raises(ValueError, match="n_samples"):
        fe.variance(c.model, c.data, c.family, "squared_score", n_samples=n)


@pytest.mark.parametrize("est", ["empirical", "batched_empirical"])
def test_empirical_needs_labels(est):
    c = make_case("cat3")
    for call in (lambda: fe.variance(c.model, c.x, c.family, est),
                 lambda: fe.sample(c.model, c.x, c.family, est)):
        with pytest.raises(ValueError, match="labels") as ei:
            call()
        assert "(x, y)" in str(ei.value)


def test_bad_scheme_and_m_inputs():
    c = make_case("cat3")
    a = analysis("cat3")
    with pytest.raises(ValueError, match="scheme") as ei:
        fe.variance(c.model, c.data, c.family, "squared_score", scheme="bogus")
    assert "'all'" in str(ei.value) and "'iid'" in str(ei.value)
    with pytest.raises(ValueError, match="m_inputs"):
        fe.variance(c.model, c.data, c.family, "squared_score", scheme="all", m_inputs=2)
    with pytest.raises(ValueError, match="m_inputs"):
        a.mean("squared_score", scheme="all", m_inputs=2)
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="m_inputs"):
            a.variance("squared_score", scheme="iid", m_inputs=bad)
    with pytest.raises(ValueError, match="scheme"):
        a.target("bogus")


def test_unanalysed_estimator_is_named():
    c = make_case("cat3")
    a = fe.analyse(c.model, c.x, c.family, ["squared_score"])
    with pytest.raises(ValueError, match="neg_hessian was not analysed"):
        a.variance("neg_hessian")


def test_rademacher_cholesky_is_announced():
    """Hutchinson with Rademacher probes on a family without a closed-form L says that the
    Cholesky factor of Σ is used (issue 10, "Bad input")."""
    c = make_case("meanvar")
    with pytest.warns(UserWarning, match="Cholesky"):
        fe.variance(c.model, c.x, c.family, "output_hutchinson_rademacher")


@pytest.mark.parametrize("est", ["batched_squared_gradient", "batched_output_hutchinson_rademacher",
                                 "batched_empirical", "squared_score"])
def test_given_batches_are_squared_batch_by_batch(est):
    """Data given as a list of batches (as a DataLoader gives them): the batched estimators square each
    batch's gradient, Σ_b (Σ_{m∈b} s_m)², so the exact moments are the sums over independent batches of
    the enumeration oracle run on each batch alone; per-input estimators do not depend on the batching."""
    c = make_case("cat3")
    cuts = [(0, 1), (1, c.x.shape[0])]
    batches = [(c.x[i:j], c.y[i:j]) for i, j in cuts]
    a = fe.analyse(c.model, batches, c.family, [est])
    assert a.moments.batch_sizes == [j - i for i, j in cuts]
    parts = [Oracle(c.model, c.x[i:j], c.fam, c.y[i:j]).moments(est) for i, j in cuts]
    var, mean = sum(p["var"] for p in parts), sum(p["mean"] for p in parts)
    o = c.oracle
    fails = compare_exact(o.flat(a.variance(est)), var, f"{est} batches", scale=float(mean.abs().max()) ** 2)
    fails += compare_exact(o.flat(a.mean(est)), mean, f"{est} batches mean")
    assert not fails, "\n".join(fails)


def test_iid_batch_size_splits_the_cross_term():
    """Scheme "iid" with batch=B: M' i.i.d. inputs squared in batches of B; the label term's cross part
    is 2·Σ_b B_b(B_b − 1)/M'·Ī² (= 0 for B = 1: the batched estimator becomes the squared score)."""
    a = analysis("cat3")
    one = a.variance("batched_squared_gradient", scheme="iid", m_inputs=4, batch=1)
    ss = a.variance("squared_score", scheme="iid", m_inputs=4)
    for n in one:
        torch.testing.assert_close(one[n], ss[n], rtol=1e-12, atol=0)
    full = a.variance("batched_squared_gradient", scheme="iid", m_inputs=4)
    two = a.variance("batched_squared_gradient", scheme="iid", m_inputs=4, batch=2)
    Ibar = {n: v / a.M for n, v in a.moments.I_sum.items()}
    for n in full:     # pairs per input: 3 (one batch of 4) against 1 (two batches of 2)
        torch.testing.assert_close(full[n] - two[n], 2 * (3 - 1) * Ibar[n] ** 2 / 4, rtol=1e-10, atol=1e-300)
    with pytest.raises(ValueError, match="scheme='iid' only"):
        a.variance("batched_squared_gradient", batch=2)


@pytest.mark.parametrize("fam,y,match", [
    ("bernoulli", [0.0, 2.0], "must be 0 or 1"),
    ("poisson", [1.0, -3.5], "non-negative integers"),
    ("poisson", [1.0, 0.5], "non-negative integers"),
])
def test_observed_labels_outside_the_support_are_refused(fam, y, match):
    """The empirical estimators read t(y) of the observed labels: a label the family cannot produce is an
    error naming the support, never a number."""
    from fishersym import families
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Linear(2, 1).double()
    x = torch.randn(2, 2, generator=g, dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        fe.variance(net, (x, torch.tensor(y, dtype=torch.float64)), families.get(fam), "empirical")
