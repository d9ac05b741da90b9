"""Reliability of the numeric entry points (issue 13): one meaning of ``data``, full off-diagonal
indices, detached inputs, shape/size errors, memory budget, counts, dtypes, a stable input
variance, the batch-independence probe, and no change to the user's model or global state.

Every test here failed on the main branch before the fix (the item number is in a comment).
New names are imported inside the tests that need them, so each test fails on its own merits
on the old code.
"""
from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fishersym import families
from fishersym.numeric import conditional_stats, dataset_stats, estimate, offdiag_stats

from test_numeric_helpers import make_family, small_mlp

DOCUMENTED = (ValueError, TypeError)


class Generic(nn.Module):
    """A small model the fast path does not take (not an nn.Sequential)."""

    def __init__(self, d_in=2, out=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(d_in, out).double()
        with torch.no_grad():
            for p in self.lin.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))

    def forward(self, x):
        return torch.tanh(self.lin(x))


class SharedLinear(nn.Module):
    """One nn.Linear used twice (issue 13 item 7: the generic path replaced its nn.Parameters)."""

    def __init__(self, seed=1):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(3, 3).double()
        with torch.no_grad():
            for p in self.lin.parameters():
                p.copy_(0.4 * torch.randn(p.shape, generator=g, dtype=torch.float64))

    def forward(self, x):
        return self.lin(torch.tanh(self.lin(x)))


def _x(B=5, d=2, seed=0):
    return torch.randn(B, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _fam():
    return make_family("categorical")  # C = 3


# ------------------------------------------------------------------------------------------- item 3
def test_dataset_tuple_is_inputs_and_labels():
    # issue 13 item 3: (x, y) was iterated as two batches, analysing the targets as inputs
    model, fam = small_mlp(3, seed=2), _fam()
    x = _x(6)
    y = torch.randn(6, 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)  # same shape as x
    ref = dataset_stats(model, x, fam, progress=False)
    got = dataset_stats(model, (x, y), fam, progress=False)
    assert got.info["n_inputs"] == 6
    for n in ref.fisher:
        assert torch.equal(got.fisher[n], ref.fisher[n])
        assert torch.equal(got.var1[n], ref.var1[n])


@pytest.mark.parametrize("data_kind", ["tuple_mismatch", "tuple3", "mixed_list", "list_xy"])
def test_ambiguous_data_is_refused_everywhere(data_kind):
    # issue 13 item 3: ambiguous data were read silently (or failed inside the model)
    model, fam = small_mlp(3, seed=2), _fam()
    x = _x(6)
    data = {"tuple_mismatch": (x, x[:4]),
            "tuple3": (x[:2], x[2:4], x[4:]),
            "mixed_list": [x[:3], (x[3:], None)],
            "list_xy": [x, torch.randn(6, 4, dtype=torch.float64)]}[data_kind]
    for call in (lambda: dataset_stats(model, data, fam, progress=False),
                 lambda: estimate(model, data, fam, "I1", generator=torch.Generator().manual_seed(0),
                                  progress=False)):
        with pytest.raises(ValueError, match="tuple|list"):
            call()


def test_estimate_and_dataset_read_data_alike():
    # issue 13 item 3: the same forms give the same inputs in both entry points
    from fishersym.numeric import iter_data
    x, y = _x(7), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    forms = [(x, y), [(x[:3], y[:3]), (x[3:], y[3:])], [x[:3], x[3:]], x]
    for data in forms:
        batches, _ = iter_data(data, 3)
        xs = torch.cat([b for b, _ in batches])
        assert torch.equal(xs, x)
    model, fam = small_mlp(3, seed=2), _fam()
    a = estimate(model, (x, y), fam, "empirical", progress=False, batch_size=3)
    b = estimate(model, [(x[:3], y[:3]), (x[3:], y[3:])], fam, "empirical", progress=False)
    for n in a:
        assert torch.allclose(a[n], b[n], rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------------- item 5
def test_offdiag_requires_full_indices():
    # issue 13 item 5: an int index for a 2-D weight perturbed a whole row
    model, fam = small_mlp(3, seed=2), _fam()
    x = _x(3)
    with pytest.raises(TypeError, match="one per dimension"):
        offdiag_stats(model, x, fam, [(("0.weight", 0), ("0.weight", (1, 1)))])
    with pytest.raises(ValueError, match="one int per dimension"):
        offdiag_stats(model, x, fam, [(("0.weight", (0,)), ("0.weight", (1, 1)))])
    with pytest.raises(ValueError, match="out of range"):
        offdiag_stats(model, x, fam, [(("0.weight", (0, 5)), ("0.weight", (1, 1)))])
    # a full index works, and an int is a full index of a bias (1-D)
    r = offdiag_stats(model, x, fam, [(("0.weight", (0, 1)), ("0.bias", 2))])
    assert r["fisher_ij"].shape == (1, 3)


# ------------------------------------------------------------------------------------------ item 12
def test_inputs_requiring_grad_are_detached():
    # issue 13 item 12: a RuntimeError about out= arguments
    model, fam = small_mlp(3, seed=2), _fam()
    x = _x(4)
    xr = x.clone().requires_grad_(True)
    for path in ("fast", "generic"):
        a = conditional_stats(model, xr, fam, path=path)
        b = conditional_stats(model, x, fam, path=path)
        for n in a.fisher:
            assert torch.equal(a.var1[n], b.var1[n])
    d = dataset_stats(model, xr, fam, progress=False)
    assert all(torch.isfinite(v).all() for v in d.fisher.values())
    e = estimate(model, xr, fam, "I2", generator=torch.Generator().manual_seed(0), progress=False)
    assert all(torch.isfinite(v).all() for v in e.values())
    o = offdiag_stats(model, xr, fam, [(("0.weight", (0, 0)), ("0.weight", (0, 1)))])
    assert torch.isfinite(o["var1_ij"]).all()
    assert xr.grad is None and xr.requires_grad


# ------------------------------------------------------------------------------------------ item 13
def test_empty_batch_is_a_clear_error():
    # issue 13 item 13: IndexError
    model, fam = small_mlp(3, seed=2), _fam()
    for path in ("fast", "generic"):
        with pytest.raises(ValueError, match="empty"):
            conditional_stats(model, torch.empty(0, 2, dtype=torch.float64), fam, path=path)
    with pytest.raises(ValueError, match="empty"):
        dataset_stats(model, [_x(3), torch.empty(0, 2, dtype=torch.float64)], fam, progress=False)


def test_one_dimensional_input_explains_the_convention():
    # issue 13 item 13: failed inside the batch-independence probe
    fam = _fam()
    with pytest.raises(ValueError, match=r"\(batch, features\)|reshape\(1, "):
        conditional_stats(Generic(d_in=3), torch.randn(3, dtype=torch.float64), fam)
    with pytest.raises(ValueError, match=r"reshape"):
        conditional_stats(Generic(d_in=3), torch.randn(5, dtype=torch.float64), fam)
    with pytest.raises(ValueError, match=r"reshape"):
        conditional_stats(small_mlp(3, d_in=3), torch.randn(3, dtype=torch.float64), fam)


class PerToken(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 3).double()

    def forward(self, x):  # x (B, T, 2) -> (B, T, 3)
        return self.lin(x)


def test_per_token_outputs_are_refused_with_the_way_out():
    # issue 13 item 13: "too many values to unpack"
    with pytest.raises(ValueError, match=r"model\(x\)\[:, t\]"):
        conditional_stats(PerToken(), torch.randn(4, 5, 2, dtype=torch.float64), _fam())
    with pytest.raises(ValueError, match=r"position"):
        dataset_stats(PerToken(), torch.randn(4, 5, 2, dtype=torch.float64), _fam(), progress=False)
    with pytest.raises(ValueError, match=r"position"):
        estimate(PerToken(), torch.randn(4, 5, 2, dtype=torch.float64), _fam(), "I1",
                 generator=torch.Generator().manual_seed(0), progress=False)
    # the suggested wrapping works
    class Pos(nn.Module):
        def __init__(self, m, t):
            super().__init__()
            self.m, self.t = m, t

        def forward(self, x):
            return self.m(x)[:, self.t]

    r = conditional_stats(Pos(PerToken(), 2), torch.randn(4, 5, 2, dtype=torch.float64), _fam())
    assert r.fisher["m.lin.weight"].shape == (4, 3, 2)


def test_batch_size_zero_and_no_pairs():
    # issue 13 item 13: ZeroDivisionError and an error inside torch.stack
    model, fam = small_mlp(3, seed=2), _fam()
    with pytest.raises(ValueError, match="batch_size"):
        dataset_stats(model, _x(4), fam, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        estimate(model, _x(4), fam, batch_size=0, generator=torch.Generator().manual_seed(0), progress=False)
    with pytest.raises(ValueError, match="pairs is empty"):
        offdiag_stats(model, _x(4), fam, [])


# ------------------------------------------------------------------------------------------ item 14
def test_group_bounds_memory_is_checked_before_allocating(monkeypatch):
    # issue 13 item 14: (B, C², C²) matrices were formed without a size check
    from fishersym.numeric import MemoryBudgetError
    fam = families.get("categorical", C=10)
    model = small_mlp(10, seed=3)
    x = _x(20)
    monkeypatch.setenv("FISHERSYM_MEMORY_BUDGET", "1MiB")
    with pytest.raises(MemoryBudgetError, match=r"MiB.*group_bounds=False.*corollary46") as ei:
        conditional_stats(model, x, fam, group_bounds=True)
    assert isinstance(ei.value, ValueError)
    with pytest.raises(MemoryBudgetError, match="batch_size"):
        dataset_stats(model, x, fam, group_bounds=True, progress=False)
    # the keyword overrides the environment; Corollary 4.6 alone needs no C⁴ matrix
    r = conditional_stats(model, x, fam, group_bounds=True, memory_budget="1GiB")
    c = conditional_stats(model, x, fam, group_bounds="corollary46")
    for g in c.groups:
        assert not any(k.endswith("_d1") for k in c.groups[g])
        for k, v in c.groups[g].items():
            if k.endswith("_c46"):
                assert torch.allclose(v, r.groups[g][k], rtol=1e-12)
        assert any(k.endswith("_d1") for k in r.groups[g])


def test_other_large_allocations_are_checked(monkeypatch):
    # issue 13 item 14: the C⁴ moment tensors (use_eig), the sampled labels of estimate and offdiag's
    # M̄ were allocated without a size check
    from fishersym.numeric import MemoryBudgetError
    fam = families.get("gaussian", C=6)
    model = small_mlp(6, seed=3)
    monkeypatch.setenv("FISHERSYM_MEMORY_BUDGET", "1MiB")
    with pytest.raises(MemoryBudgetError, match="use_eig=False"):
        conditional_stats(model, _x(30), fam, use_eig=True)
    conditional_stats(model, _x(30), fam, use_eig=False)  # no C⁴ tensors: within the budget
    with pytest.raises(MemoryBudgetError, match="n_samples"):
        estimate(small_mlp(3, seed=2), _x(4), _fam(), "I1", n_samples=10 ** 4,
                 generator=torch.Generator().manual_seed(0), progress=False)
    monkeypatch.setenv("FISHERSYM_MEMORY_BUDGET", "4KiB")
    with pytest.raises(MemoryBudgetError, match="offdiag"):
        offdiag_stats(small_mlp(3, seed=2), _x(3), _fam(), [(("0.bias", 0), ("0.bias", 1))])


@pytest.mark.parametrize("path", ["fast", "generic"])
def test_gram_size_estimate_covers_the_allocation(path):
    # issue 13 item 14: the estimate is an upper bound of the Gram matrices actually formed
    from fishersym.numeric.conditional import analyse_batch, gram_bytes, select_engine
    fam = families.get("categorical", C=4)
    model = small_mlp(4, seed=3)
    x = _x(6)
    eng = select_engine(model, fam, path)
    ba = analyse_batch(eng, model, x, fam, 1, grams=True)
    formed = sum(t.numel() * t.element_size() for d in ba.eng.grams.values() for t in d.values())
    est = gram_bytes(eng, 6, 4, torch.float64)
    assert formed <= est <= 4 * formed


def test_check_budget_parsing_and_message(monkeypatch):
    # issue 13 item 14
    from fishersym.numeric.guard import DEFAULT_MEMORY_BUDGET, MemoryBudgetError, check_budget, memory_budget
    monkeypatch.delenv("FISHERSYM_MEMORY_BUDGET", raising=False)
    assert memory_budget() == DEFAULT_MEMORY_BUDGET == 2 * 1024 ** 3
    check_budget(DEFAULT_MEMORY_BUDGET, "x")  # at the budget: allowed
    with pytest.raises(MemoryBudgetError, match=r"2\.0 GiB.*use less"):
        check_budget(DEFAULT_MEMORY_BUDGET + 1, "the thing", ["use less"])
    monkeypatch.setenv("FISHERSYM_MEMORY_BUDGET", "3GiB")
    assert memory_budget() == 3 * 1024 ** 3
    assert memory_budget(1000) == 1000
    monkeypatch.setenv("FISHERSYM_MEMORY_BUDGET", "lots")
    with pytest.raises(ValueError, match="FISHERSYM_MEMORY_BUDGET"):
        memory_budget()
    with pytest.raises(ValueError):
        memory_budget(-5)


# ------------------------------------------------------------------------------------------ item 22
def test_numpy_integer_counts_accepted_bools_and_huge_refused():
    # issue 13 item 22: numpy integers were refused; 10**400 gave OverflowError
    model, fam = small_mlp(3, seed=2), _fam()
    x = _x(6)
    a = conditional_stats(model, x, fam, n_samples=np.int64(3))
    b = conditional_stats(model, x, fam, n_samples=3)
    assert all(torch.equal(a.var1[n], b.var1[n]) for n in a.fisher)
    d1 = dataset_stats(model, x, fam, n_samples=np.int32(2), scheme="iid", m_inputs=np.int64(4),
                       batch_size=np.int16(4), progress=False)
    d2 = dataset_stats(model, x, fam, n_samples=2, scheme="iid", m_inputs=4, batch_size=4, progress=False)
    assert all(torch.allclose(d1.var2[n], d2.var2[n], rtol=1e-14) for n in d1.fisher)
    e = estimate(model, x, fam, "I1", n_samples=np.int64(2), batch_size=np.int64(4),
                 generator=torch.Generator().manual_seed(0), progress=False)
    assert e.n_samples == 2 and type(e.n_samples) is int
    with pytest.raises(TypeError, match="bool"):
        conditional_stats(model, x, fam, n_samples=True)
    with pytest.raises(TypeError, match="bool"):
        dataset_stats(model, x, fam, batch_size=True, progress=False)
    with pytest.raises(ValueError, match=r"maximum is 9007199254740992"):
        conditional_stats(model, x, fam, n_samples=10 ** 400)
    with pytest.raises(ValueError, match=r"maximum"):
        dataset_stats(model, x, fam, n_samples=10 ** 400, progress=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_refused_up_front(dtype):
    # issue 13 item 22: float16/bfloat16 failed inside eigh after seconds (or ran silently)
    model, fam = small_mlp(3, seed=2), _fam()
    with pytest.raises(TypeError, match="use float32 or float64"):
        conditional_stats(model.to(dtype), _x(3).to(dtype), fam)
    model = small_mlp(3, seed=2)
    for call in (lambda: conditional_stats(model, _x(3).to(dtype), fam),
                 lambda: dataset_stats(model, _x(3).to(dtype), fam, progress=False),
                 lambda: estimate(model, _x(3).to(dtype), fam, generator=torch.Generator().manual_seed(0),
                                  progress=False),
                 lambda: offdiag_stats(model, _x(3).to(dtype), fam, [(("0.bias", 0), ("0.bias", 1))])):
        with pytest.raises(TypeError, match="use float32 or float64"):
            call()


# ------------------------------------------------------------------------------------------ item 25
def _exact_pvar(vals) -> float:
    fr = [Fraction(float(v)) for v in vals]
    m = sum(fr) / len(fr)
    return float(sum((v - m) ** 2 for v in fr) / len(fr))


@pytest.mark.parametrize("path", ["fast", "generic"])
def test_duplicate_inputs_give_a_zero_input_variance(path):
    # issue 13 item 25: FloatingPointError when inputs repeat
    model, fam = small_mlp(3, seed=2), _fam()
    x = _x(1, seed=4).repeat(40, 1)
    r = dataset_stats(model, x, fam, path=path, batch_size=7, progress=False)
    eps = torch.finfo(torch.float64).eps
    for n in r.fisher:
        iv = r.input_var[n]
        assert bool((iv >= 0).all())
        assert bool((iv <= (8 * eps * r.fisher[n]) ** 2 + 1e-300).all()), n


def test_input_variance_against_exact_rational_arithmetic():
    # issue 13 item 25: Var_q I against the exact variance (fractions) of the per-input values, for
    # nearly repeated inputs (Var_q I ≈ 1e-10·I²): the form E[I²] − (E I)² errs by about ε·I² there
    model, fam = small_mlp(3, seed=2), _fam()
    base = _x(1, seed=6).repeat(24, 1)
    x = torch.cat([base + 1e-5 * _x(24, seed=7), base[:3]])
    r = dataset_stats(model, x, fam, batch_size=5, progress=False)
    c = conditional_stats(model, x, fam)
    eps, n = torch.finfo(torch.float64).eps, x.shape[0]
    for name in r.fisher:
        per = c.fisher[name].reshape(n, -1)
        got = r.input_var[name].reshape(-1)
        for j in range(per.shape[1]):
            ex = _exact_pvar(per[:, j].tolist())
            mean = abs(float(per[:, j].mean()))
            # Chan/Welford rounding bound (see test_centred_moments_merge_matches_exact_variance)
            tol = 8 * n * eps * (ex + math.sqrt(ex) * mean) + 8 * n * eps ** 2 * mean ** 2
            assert abs(float(got[j]) - ex) <= tol, (name, j, float(got[j]), ex)


@settings(max_examples=60)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=40),
       st.floats(-1e8, 1e8, allow_nan=False), st.lists(st.integers(1, 7), min_size=1, max_size=8))
def test_centred_moments_merge_matches_exact_variance(vals, offset, splits):
    # issue 13 item 25: the centred accumulator (Chan's merge) over any split of the data
    from fishersym.numeric import CentredMoments
    v = torch.tensor(vals, dtype=torch.float64) + offset
    acc, other, start, k = CentredMoments(), CentredMoments(), 0, 0
    while start < len(v):
        size = splits[k % len(splits)]
        (acc if k % 2 == 0 else other).add(v[start:start + size].unsqueeze(1))
        start, k = start + size, k + 1
    acc.merge(other)
    ex = _exact_pvar(v.tolist())
    got = float(acc.variance()[0])
    # rounding of a Welford/Chan accumulation (Chan, Golub & LeVeque 1983): relative error O(n·ε·κ) with
    # κ = √(1 + mean²/var), i.e. absolute n·ε·(var + √var·|mean|), plus n·ε²·mean² from the rounded mean
    # when the values are equal; the form E[v²] − (E v)² errs by ε·mean² instead (up to 2 at offset 1e8)
    eps, n, mean = torch.finfo(torch.float64).eps, len(v), abs(float(v.mean()))
    assert got >= 0
    assert abs(got - ex) <= 8 * n * eps * (ex + math.sqrt(ex) * mean) + 8 * n * eps ** 2 * mean ** 2


# ------------------------------------------------------------------------------------------ item 26
class CoupledAfterFirst(nn.Module):
    """Each input's output mixes in the previous input's: input 0 alone is unaffected."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 3).double()

    def forward(self, x):
        out = self.lin(x)
        if out.shape[0] > 1:
            out = torch.cat([out[:1], out[1:] + 0.3 * out[:-1]])
        return out


class CentredBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 3).double()

    def forward(self, x):
        return self.lin(x - x.mean(0, keepdim=True))


@pytest.mark.parametrize("cls", [CoupledAfterFirst, CentredBatch])
def test_batch_coupling_beyond_input_zero_is_refused(cls):
    # issue 13 item 26: only input 0 was checked (CoupledAfterFirst passed on main; CentredBatch, a
    # permutation-symmetric coupling, is the case the permuted-batch probe alone would miss)
    torch.manual_seed(0)
    model = cls()
    state = torch.get_rng_state()
    with pytest.raises(ValueError, match="depends on the other inputs"):
        conditional_stats(model, _x(6), _fam())
    assert torch.equal(torch.get_rng_state(), state)  # the probe has its own generator


# ------------------------------------------------------------------------------------------- item 7
def _entry_points(model, x, fam, pair):
    return {
        "conditional_stats": lambda: conditional_stats(model, x, fam),
        "conditional_stats_generic": lambda: conditional_stats(model, x, fam, path="generic", group_bounds=True),
        "dataset_stats": lambda: dataset_stats(model, x, fam, batch_size=2, progress=False),
        "estimate": lambda: estimate(model, x, fam, "I2", n_samples=2, progress=False),
        "estimate_generic": lambda: estimate(model, x, fam, "I1", path="generic", progress=False),
        "offdiag_stats": lambda: offdiag_stats(model, x, fam, [pair]),
    }


@pytest.mark.parametrize("which", ["mlp", "shared_linear"])
def test_entry_points_leave_model_and_global_state_unchanged(which):
    # issue 13 item 7: the generic path replaced the nn.Parameters of a Linear used twice, and
    # estimate consumed the global RNG; every public entry point is compared before/after
    from fishersym.numeric import state_fingerprint
    if which == "mlp":
        model, x, pair = small_mlp(3, seed=2), _x(4), (("0.weight", (0, 0)), ("2.bias", 1))
    else:
        model, x, pair = SharedLinear(), _x(4, d=3), (("lin.weight", (0, 0)), ("lin.bias", 1))
    model.train()
    fam = _fam()
    params = list(model.parameters())
    for name, call in _entry_points(model, x, fam, pair).items():
        if which == "shared_linear" and name in ("conditional_stats",):
            continue  # same path as the generic entry below (not a Sequential)
        before = state_fingerprint(model)
        call()
        assert state_fingerprint(model) == before, name
        assert all(a is b for a, b in zip(model.parameters(), params)), name
        assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in model.parameters()), name
    # a second analysis still works (it refused the mutated model before)
    conditional_stats(model, x, fam, path="generic")
    # and the model still trains
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_estimate_without_generator_uses_a_private_one():
    # issue 13 item 7: estimate(generator=None) drew from the global RNG (and the guard alone would
    # then replay the same labels on every call)
    model, fam = small_mlp(3, seed=2), _fam()
    x, N = _x(16), 16
    # false-alarm probability: two independent draws give equal estimates only if every input draws
    # the same label counts; P = Π_b Σ_counts Multinomial(counts; N, p_b)², computed exactly here
    p = torch.softmax(model(x), -1).detach().tolist()
    collide = 1.0
    for pb in p:
        tot = 0.0
        for n0 in range(N + 1):
            for n1 in range(N + 1 - n0):
                n2 = N - n0 - n1
                pr = (math.comb(N, n0) * math.comb(N - n0, n1) * pb[0] ** n0 * pb[1] ** n1 * pb[2] ** n2)
                tot += pr * pr
        collide *= tot
    assert collide < 1e-9
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = estimate(model, x, fam, "I1", n_samples=N, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    b = estimate(model, x, fam, "I1", n_samples=N, progress=False)
    assert any(not torch.equal(a[n], b[n]) for n in a)


def test_generic_engine_itself_keeps_the_shared_parameters():
    # issue 13 item 7 (the fix in numeric/generic.py): without the entry point's guard, the generic
    # engine alone must leave a Linear used twice with its own nn.Parameters (it replaced them with
    # detached tensors, requires_grad=False, so the model could no longer be trained)
    from fishersym.numeric import state_fingerprint
    from fishersym.numeric.conditional import analyse_batch, select_engine
    model, fam = SharedLinear(), _fam()
    before = state_fingerprint(model)
    eng = select_engine(model, fam, "generic")
    analyse_batch(eng, model, _x(4, d=3), fam, 1)
    assert state_fingerprint(model) == before
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in model.parameters())


def test_offdiag_and_estimate_on_a_module_registered_twice():
    # issue 13 item 7: functional_call replaced the Parameters of a module registered twice
    # (nn.Sequential(lin, act, lin)); offdiag_stats against autograd through the real composition
    from fishersym.numeric import state_fingerprint
    g = torch.Generator().manual_seed(5)
    lin = nn.Linear(3, 3).double()
    with torch.no_grad():
        for p in lin.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    model, fam, x = nn.Sequential(lin, nn.Tanh(), lin), _fam(), _x(4, d=3)
    before = state_fingerprint(model)
    pairs = [(("0.weight", (0, 1)), ("0.weight", (2, 0))), (("0.weight", (1, 1)), ("0.bias", 2))]
    r = offdiag_stats(model, x, fam, pairs)
    estimate(model, x, fam, "I2", generator=torch.Generator().manual_seed(0), path="generic", progress=False)
    assert state_fingerprint(model) == before
    assert all(type(p) is nn.Parameter and p.requires_grad for p in model.parameters())
    W0, b0 = lin.weight.detach(), lin.bias.detach()

    def f(W, b):
        return torch.nn.functional.linear(torch.tanh(torch.nn.functional.linear(x, W, b)), W, b)

    JW, Jb = torch.func.jacrev(f, argnums=(0, 1))(W0, b0)      # (B, C, 3, 3), (B, C, 3)
    h = fam.natural(f(W0, b0))
    S = fam.sigma(h)
    u = {("0.weight", (0, 1)): JW[..., 0, 1], ("0.weight", (2, 0)): JW[..., 2, 0],
         ("0.weight", (1, 1)): JW[..., 1, 1], ("0.bias", 2): Jb[..., 2]}
    for k, ((a, b)) in enumerate(pairs):
        ref = (u[a].unsqueeze(-2) @ S @ u[b].unsqueeze(-1))[..., 0, 0]
        assert torch.allclose(r["fisher_ij"][k], ref, rtol=1e-10, atol=1e-14), k


class Mutating(nn.Module):
    """A model whose forward changes global state and its own modes (the guard restores all of it)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 3).double()
        self.register_buffer("calls", torch.zeros((), dtype=torch.float64))

    def forward(self, x):
        torch.backends.mha.set_fastpath_enabled(not torch.backends.mha.get_fastpath_enabled())
        random.random()
        self.lin.training = not self.lin.training
        return self.lin(x)


def test_preserve_user_state_restores_everything_also_on_error():
    # issue 13 item 7
    from fishersym.numeric import preserve_user_state, state_fingerprint
    model = Mutating()
    before = state_fingerprint(model)
    with pytest.raises(RuntimeError, match="boom"):
        with preserve_user_state(model):
            model(_x(2))
            torch.rand(1)
            model.calls += 1
            model.lin.weight.requires_grad_(False)
            model.lin.register_forward_hook(lambda *a: None)
            model.lin._parameters["bias"] = nn.Parameter(torch.zeros(3, dtype=torch.float64))
            torch.set_default_dtype(torch.float32)
            torch.backends.cuda.enable_flash_sdp(not torch.backends.cuda.flash_sdp_enabled())
            torch.set_grad_enabled(False)
            with torch.no_grad():
                model.lin.weight.add_(1.0)
            raise RuntimeError("boom")
    assert torch.get_default_dtype() == torch.float64 and torch.is_grad_enabled()
    assert state_fingerprint(model) == before
    # through a public entry point too
    before = state_fingerprint(model)
    conditional_stats(model, _x(3), _fam(), path="generic")
    assert state_fingerprint(model) == before


def test_state_fingerprint_sees_every_kind_of_change():
    # issue 13 item 7: the comparison used by the tests above can fail
    from fishersym.numeric import state_fingerprint
    model = small_mlp(3, seed=2)
    mutations = [
        lambda m: m[0].weight.data.add_(1e-12),
        lambda m: m[0].weight.requires_grad_(False),
        lambda m: m[0]._parameters.__setitem__("bias", nn.Parameter(m[0].bias.detach().clone())),
        lambda m: m.eval(),
        lambda m: m[1].register_forward_pre_hook(lambda *a: None),
        lambda m: torch.rand(1),
        lambda m: torch.backends.mha.set_fastpath_enabled(not torch.backends.mha.get_fastpath_enabled()),
        lambda m: m.register_buffer("extra", torch.zeros(1)),
    ]
    for k, mut in enumerate(mutations):
        model = small_mlp(3, seed=2)
        model.train()
        fast = torch.backends.mha.get_fastpath_enabled()
        before = state_fingerprint(model)
        mut(model)
        assert state_fingerprint(model) != before, k
        torch.backends.mha.set_fastpath_enabled(fast)


# ----------------------------------------------------------------------------- the class, generated
_BAD_COUNTS = st.one_of(st.integers(-3, 3), st.just(True), st.just(2.0), st.just("2"), st.just(None),
                        st.just(10 ** 400), st.just(np.int64(2)), st.just(np.float64(2.0)))


@st.composite
def _bad_tensor(draw):
    dims = draw(st.lists(st.integers(0, 3), min_size=0, max_size=4))
    dtype = draw(st.sampled_from([torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64,
                                  torch.bool, torch.complex128]))
    t = torch.zeros(dims, dtype=dtype) if dtype == torch.bool else (torch.randn(dims).to(dtype) if dims
                                                                      else torch.tensor(1.0).to(dtype))
    if draw(st.booleans()) and t.is_floating_point():
        t.requires_grad_(True)
    return t


@st.composite
def _bad_data(draw):
    t = draw(_bad_tensor())
    u = draw(_bad_tensor())
    kind = draw(st.sampled_from(["tensor", "pair", "triple", "list", "mixed", "numpy", "str", "dict", "none",
                                 "int", "gen", "empty_list", "list_of_none"]))
    return {"tensor": lambda: t, "pair": lambda: (t, u), "triple": lambda: (t, u, t), "list": lambda: [t, u],
            "mixed": lambda: [t, (u, None)], "numpy": lambda: np.zeros((2, 2)), "str": lambda: "abc",
            "dict": lambda: {"x": t}, "none": lambda: None, "int": lambda: 3, "gen": lambda: (v for v in [t, u]),
            "empty_list": lambda: [], "list_of_none": lambda: [None]}[kind]()


@settings(max_examples=60)
@given(data=st.data())
def test_bad_inputs_raise_only_documented_errors(data):
    # issue 13 items 3, 5, 12, 13, 22: random bad shapes, types and counts through every entry point
    from fishersym.numeric import state_fingerprint
    model = data.draw(st.sampled_from(["fast", "generic"]))
    model = small_mlp(3, seed=2) if model == "fast" else Generic()
    fam = _fam()
    entry = data.draw(st.sampled_from(["conditional", "dataset", "estimate", "offdiag"]))
    x = data.draw(st.one_of(_bad_tensor(), _bad_data()) if entry != "conditional" else _bad_tensor())
    n = data.draw(st.one_of(st.just(1), _BAD_COUNTS))
    bs = data.draw(st.one_of(st.just(2), _BAD_COUNTS))
    pairs = data.draw(st.sampled_from([[], [(("lin.weight", 0), ("lin.bias", 0))], "x", None,
                                       [(("0.weight", (0, 0)), ("0.bias", (9,)))], [(("0.weight", (0, 0)),)],
                                       [(("0.weight", (0, 0)), ("0.weight", (0, 1)))]]))
    before = state_fingerprint(model)
    try:
        if entry == "conditional":
            conditional_stats(model, x, fam, n_samples=n)
        elif entry == "dataset":
            dataset_stats(model, x, fam, n_samples=n, batch_size=bs, progress=False)
        elif entry == "estimate":
            estimate(model, x, fam, "I1", n_samples=n, batch_size=bs, generator=torch.Generator().manual_seed(0),
                     progress=False)
        else:
            offdiag_stats(model, x, fam, pairs, n_samples=n)
    except DOCUMENTED as exc:
        assert str(exc).strip(), type(exc)
    assert state_fingerprint(model) == before
