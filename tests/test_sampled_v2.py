"""Sampled V₂ through the public API (issue 9 item 2c, and "Correctness": the coverage of the intervals).

* The sampled entries of every w-dependent key equal the full exact computation (to 1e-12), the
  mask marks exactly those entries (all of a tensor whose w is proved zero), the others are NaN,
  and the reported estimates are the expansion estimator applied to the exact values there.
* Coverage: the 95 % interval of a group's V₂ total is checked against the exact total over many
  independent samples, drawn by the engine's own sampling routine (the same generator protocol as
  ``v2="sample", seed=s``; the first test checks that the pipeline draws exactly those entries).
  The misses are Binomial(T, 0.05) for a calibrated interval; the test accepts the central region of
  that law with false-alarm probability ≤ 1e-3 (computed below with scipy).
"""
import math

import pytest
import torch
from scipy.stats import binom
from torch import nn

from fishersym import families
from fishersym.numeric import conditional_stats, dataset_stats
from fishersym.numeric.cost import sample_size
from fishersym.numeric.reverse import _sample_index
from fishersym.numeric.stats import W_KEYS, estimate_total

CAT = families.get("categorical", C=3)
W_EXACT_KEYS = ("var2", "var2_lower", "var2_upper", "var2_lower_sharp", "var2_upper_sharp", "rel_sd2",
                "prob_neg2_upper", "prob_neg2")


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 6), nn.Tanh(),
                         nn.Linear(6, 3)).eval()


def _draw(sizes: dict[str, int], frac, seed: int) -> dict[str, torch.Tensor]:
    """The entries ``v2="sample", v2_sample=frac, seed=seed`` samples (tensors in the engine's order)."""
    g = torch.Generator().manual_seed(seed)
    return {n: _sample_index(P, frac, g) for n, P in sizes.items()}


def test_sampled_entries_exact_mask_and_estimates():
    model, x = _cnn(), torch.randn(2, 1, 6, 6)
    ex = conditional_stats(model, x, CAT, path="reverse", group_bounds="corollary46")
    sa = conditional_stats(model, x, CAT, path="reverse", v2="sample", v2_sample=0.5, seed=7,
                           group_bounds="corollary46")
    assert sa.estimated and not ex.estimated and ex.v2_mask is None
    proved = set(ex.info["var2_zero_reason"])
    assert proved == {"6.weight", "6.bias"}                      # the head; tanh before the rest
    sizes = {n: ex.fisher[n][0].numel() for n in ex.fisher if n not in proved}
    drawn = _draw(sizes, 0.5, 7)
    for n in ex.fisher:
        mask = sa.v2_mask[n]
        assert mask.shape == ex.fisher[n].shape[1:] and mask.dtype == torch.bool
        if n in proved:
            assert bool(mask.all())
        else:
            assert int(mask.sum()) == sample_size(sizes[n], 0.5)
            assert torch.equal(mask.flatten().nonzero().flatten(), drawn[n])   # the coverage test's draws
        for k in W_EXACT_KEYS:
            a, b = sa[k][n], ex[k][n]
            assert bool(torch.isnan(a[:, ~mask]).all()), (k, n)
            scale = float(b.abs().max()) + 1e-300
            assert float((a[:, mask] - b[:, mask]).abs().max()) <= 1e-12 * scale, (k, n)
        for k in set(ex) - set(W_KEYS):                           # u-only keys: exact everywhere
            assert torch.equal(sa[k][n], ex[k][n]), (k, n)
    for g, names in ex.group_members.items():
        sampled = [n for n in names if n not in proved]
        for k in ("var2", "var2_upper", "var2_lower_sharp"):
            if not sampled:
                assert torch.equal(sa.groups[g][k], ex.groups[g][k]) and k not in sa.standard_errors.get(g, {})
                continue
            ref = estimate_total([(ex[k][n].reshape(2, -1), drawn.get(n)) for n in names])
            est = sa.group_estimates[g][k]
            assert torch.allclose(sa.groups[g][k], ref.value, rtol=1e-12, atol=0)
            assert torch.allclose(sa.standard_errors[g][k], ref.stderr, rtol=1e-12, atol=0)
            lo, hi = sa.ci()[g][k]
            assert torch.allclose(hi - lo, 2 * 1.959963984540054 * est.stderr, rtol=1e-12)
            assert f"groups[{g!r}].{k}" in sa.info["estimated"]
            assert not est.normal_ok                              # 2–8 entries sampled: Cochran's rule fails
        if sampled:
            assert math.isnan(float(sa.groups[g]["trace_var2_upper_c46"][0]))
            assert "certified" in sa.info["not_estimated"][f"groups[{g!r}].trace_var2_upper_c46"]
            assert all(math.isfinite(float(v)) for v in sa.groups[g]["trace_fisher_upper_c46"])
    # the per-tensor mean estimate is the total's over the population
    e = sa.tensor_estimates["0.weight"]["var2"]
    assert torch.allclose(e.mean.value * 18, e.value) and e.population == 18
    assert "var2_se" in sa.table() and "V2 SAMPLED" in sa.table(by="group")


def test_dataset_same_entries_for_every_input():
    model, x = _cnn(), torch.randn(5, 1, 6, 6)
    ex = dataset_stats(model, x, CAT, path="reverse", batch_size=2, progress=False)
    sa = dataset_stats(model, x, CAT, path="reverse", batch_size=2, progress=False, v2="sample", v2_sample=3, seed=2)
    for n, mask in sa.v2_mask.items():
        for k in ("var2", "var2_upper"):
            a, b = sa[k][n], ex[k][n]
            assert bool(torch.isnan(a[~mask]).all())
            assert float((a[mask] - b[mask]).abs().max()) <= 1e-12 * (float(b.abs().max()) + 1e-300)
        assert torch.equal(sa.input_var[n], ex.input_var[n])
    for g, d in sa.group_estimates.items():
        names = sa.group_members[g]
        ref = estimate_total([(ex.var2[n].reshape(1, -1), sa.sampling.index.get(n)) for n in names])
        assert torch.allclose(d["var2"].value, ref.value[0], rtol=1e-12) and d["var2"].value.dim() == 0
        assert torch.allclose(d["var2"].stderr, ref.stderr[0], rtol=1e-12)


def test_interval_coverage_at_stated_rate():
    """400 independent samples (half of each tensor's entries) of a tanh MLP's first layer, averaged
    over 4 inputs (population skewness ≈ 1.4, so Cochran's rule holds); misses of the 95 % interval
    of the group's V₂ total ~ Binomial(400, 0.05) if calibrated."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 24), nn.Tanh(), nn.Linear(24, 3))
    x = torch.rand(4, 16) + 1
    ex = dataset_stats(model, x, CAT, path="reverse", progress=False)
    names = ex.group_members["0"]
    assert names == ["0.weight", "0.bias"] and set(ex.info["var2_zero_reason"]) == {"2.weight", "2.bias"}
    truth = ex.groups["0"]["var2"]
    sizes = {n: ex.var2[n].numel() for n in names}
    T, level, alpha = 400, 0.95, 1e-3
    misses, rule = 0, 0
    for seed in range(T):
        idx = _draw(sizes, 0.5, seed)
        est = estimate_total([(ex.var2[n].reshape(1, -1), idx[n]) for n in names], level)
        lo, hi = est.interval()
        misses += int(not (float(lo) <= float(truth) <= float(hi)))
        rule += int(est.normal_ok)
    # central acceptance region of Binomial(T, 1 - level), each tail ≤ alpha/2
    lo_acc = int(binom.ppf(alpha / 2, T, 1 - level))
    hi_acc = int(binom.isf(alpha / 2, T, 1 - level))
    assert binom.cdf(lo_acc - 1, T, 1 - level) + binom.sf(hi_acc, T, 1 - level) <= alpha
    assert lo_acc <= misses <= hi_acc, (misses, lo_acc, hi_acc)
    assert rule >= T // 2      # the rule's premise holds for (most of) these samples


def test_bad_options():
    model, x = _cnn(), torch.randn(2, 1, 6, 6)
    with pytest.raises(ValueError, match="needs v2_sample="):
        conditional_stats(model, x, CAT, path="reverse", v2="sample")
    with pytest.raises(ValueError, match="pass v2='sample'"):
        conditional_stats(model, x, CAT, path="reverse", v2_sample=4)
    with pytest.raises(ValueError, match="applies to the reverse path"):
        conditional_stats(model, x, CAT, path="generic", v2="sample", v2_sample=4)
    with pytest.raises(ValueError, match="group_bounds='corollary46'"):
        conditional_stats(model, x, CAT, path="reverse", v2="sample", v2_sample=4, group_bounds=True)
    with pytest.raises(ValueError, match="at least 2"):
        dataset_stats(model, x, CAT, path="reverse", v2="sample", v2_sample=1, progress=False)
    with pytest.raises(ValueError, match="v2 must be one of"):
        conditional_stats(model, x, CAT, v2="approx")


def test_auto_keeps_the_fast_path_exact():
    """v2='sample' with path='auto' on an MLP: the fast path computes every w exactly; nothing is estimated."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    r = conditional_stats(mlp, torch.randn(2, 3), CAT, v2="sample", v2_sample=2)
    assert r.path == "fast" and not r.estimated and "not needed" in r.info["path_reason"]
    assert r.info["v2"]["mode"] == "exact (fast path)" and "estimated" not in r.info
    assert all(bool(torch.isfinite(v).all()) for v in r.var2.values())


def test_interval_not_trusted_for_tiny_or_constant_samples():
    """A sample of 2 entries (m₃ = 0 always) or with no spread (all zeros beside one large unsampled
    entry) cannot support a normal interval: normal_ok is False.  Totals of V₂ are ≥ 0, so the
    interval's lower end is clamped at 0."""
    from fishersym.numeric.stats import MIN_SAMPLE_FOR_NORMAL, _rescale, estimate_total
    vals = torch.zeros(1, 100, dtype=torch.float64)
    vals[0, 99] = 50.0                                       # the true total is 50
    idx = torch.arange(10)                                   # 10 zeros sampled
    e = estimate_total([(vals, idx)])
    assert float(e.value) == 0.0 and float(e.stderr) == 0.0 and not e.normal_ok
    two = torch.tensor([[1.0, 30.0, 2.0, 3.0]], dtype=torch.float64)
    e2 = estimate_total([(two, torch.tensor([0, 1]))])
    assert not e2.normal_ok and MIN_SAMPLE_FOR_NORMAL > 2
    spread = torch.arange(40, dtype=torch.float64).reshape(1, 40) % 7
    e3 = estimate_total([(spread, torch.arange(0, 40, 2))])
    assert e3.normal_ok                                      # 20 entries with spread, mild skew
    lo, hi = _rescale(estimate_total([(two, torch.tensor([0, 1]))]), "conditional").interval()
    assert float(lo.min()) >= 0.0 and float(hi.min()) > 0.0
