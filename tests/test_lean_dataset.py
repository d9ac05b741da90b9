"""The lean data-set pass (issue 12 item 3): stacked batch sums, exact zero parts, one-sync checks,
keys= restriction and the factored float32 precision measurement, each against an independent
dense computation (materialised arrays summed over inputs)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fishersym import families
from fishersym.bounds.theorem41 import BOUND_CONSTANTS, bound_name, theorem41_bounds
from fishersym.families.constants import family_constants
from fishersym.numeric.checks import all_finite
from fishersym.numeric.conditional import analyse_batch, select_engine
from fishersym.numeric.parts import Part, batch_sums, batch_sums_many
from fishersym.numeric.precision import _relative_error
from fishersym.numeric.stats import (DATASET_KEYS, FISHER_SQ, base_keys_for, check_keys, dataset_batch_sums,
                                     per_input_keys, rel_sd, v1_relative_error, zero_constants)


def _dense_sum(part: Part) -> torch.Tensor:
    return part.materialize().sum(0)


def _same(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-12) -> None:
    assert a.shape == b.shape
    assert torch.equal(torch.isnan(a), torch.isnan(b)), "NaN patterns differ"
    ok = ~torch.isnan(a)
    torch.testing.assert_close(a[ok], b[ok], rtol=rtol, atol=0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_sums_many_equals_dense_sums(seed):
    g = torch.Generator().manual_seed(seed)
    B = 7
    a1, a2 = torch.rand(B, 5, generator=g, dtype=torch.float64), torch.randn(B, 3, generator=g, dtype=torch.float64)
    f1, f2, f3 = (torch.rand(B, n, generator=g, dtype=torch.float64) for n in (4, 4, 2))
    zero = torch.zeros(B, 4, dtype=torch.float64)
    parts = {   # a "weight" and a "bias" sharing rows, another layer with odd and even powers
        "w": {"x": Part(f1, a1, 2), "y": Part(f2, a1, 4), "z": Part(zero, a1, 2, zero=True), "x4": Part(f1, a1, 4)},
        "b": {"x": Part(f1), "y": Part(f2), "z": Part(zero, zero=True)},
        "v": {"x": Part(f3, a2, 1), "y": Part(f3, a2, 2)},
        "dense": {"x": Part(torch.rand(B, 2, 3, generator=g, dtype=torch.float64))},
    }
    got = batch_sums_many(parts)
    for name, d in parts.items():
        assert list(got[name]) == list(d)
        for k, part in d.items():
            _same(got[name][k], _dense_sum(part))
    # the one-parameter form agrees
    one = batch_sums(parts["w"])
    for k in parts["w"]:
        _same(one[k], got["w"][k])


def test_zero_parts_are_nan_exactly_where_the_product_is():
    """A zero part (0·g) summed without the product: NaN where some g is ±∞/NaN or some a^p is not
    finite (0·∞ = NaN), 0 elsewhere, as the dense sum computes it."""
    B = 5
    g = torch.rand(B, 4, dtype=torch.float64)
    g[1, 2] = math.inf
    g[3, 0] = math.nan
    a = torch.rand(B, 6, dtype=torch.float64)
    a[2, 4] = math.inf
    a[0, 1] = -math.inf
    a[4, 5] = math.nan
    f = g * 0.0                                   # 0 or NaN, as a bound with a zero constant
    for p in (1, 2, 4):
        part = Part(f, a, p, zero=True)
        got = batch_sums_many({"w": {"k": part, "live": Part(g.clamp(max=1.0).nan_to_num(0.5), a, p)},
                               "b": {"k": Part(f, zero=True)}})
        _same(got["w"]["k"], _dense_sum(Part(f, a, p)))
        _same(got["b"]["k"], f.sum(0))
        assert bool(torch.isnan(got["w"]["k"]).any()) and bool((got["w"]["k"] == 0).any())


def _mlp_batch(dtype=torch.float64, sharpened=False, use_eig=False, keys=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).to(dtype)
    fam = families.get("categorical", C=3)
    x = torch.randn(9, 6, dtype=dtype)
    eng = select_engine(model, fam)
    return analyse_batch(eng, model, x, fam, 1, use_eig=use_eig, sharpened=sharpened, keys=keys), fam


@pytest.mark.parametrize("sharpened,use_eig", [(False, False), (True, False), (True, True)])
def test_dataset_batch_sums_equal_materialised_sums(sharpened, use_eig):
    ba, _ = _mlp_batch(sharpened=sharpened, use_eig=use_eig)
    sums = dataset_batch_sums(ba.eng, ba.keys, ba.consts)
    smax2 = ba.consts.sigma_max_cert ** 2
    for name, d in ba.keys.items():
        for k, part in d.items():
            _same(sums[name][k], _dense_sum(part))
        fi = d["fisher"].materialize()
        _same(sums[name][FISHER_SQ], (fi * fi).sum(0))
        u2 = ba.eng.parts[name]["u2"].materialize()
        lam = smax2.reshape((-1,) + (1,) * (u2.dim() - 1))
        _same(sums[name]["input_var_upper"], (u2 * u2 * lam).sum(0))
    # the categorical family's λ_min(Σ) = 0 bounds are zero parts, summed to exact zeros
    assert ba.keys["0.weight"]["fisher_lower"].zero and not ba.keys["0.weight"]["fisher_upper"].zero
    assert bool((sums["0.weight"]["fisher_lower"] == 0).all())


def test_zero_constants_are_the_constants_zero_for_every_input():
    fam = families.get("categorical", C=4)
    h = torch.randn(3, 4, dtype=torch.float64)
    full = family_constants(fam, h, restricted=False, use_eig=False)
    sharp = family_constants(fam, h, restricted=True, use_eig=False)
    z, zs = zero_constants(full, sharp)
    assert "sigma_min_cert" in z and "sigma_min_cert" not in zs     # Σ𝟙 = 0; not on 𝟙^⊥
    for name in set(BOUND_CONSTANTS.values()):
        for c, zz in ((full, z), (sharp, zs)):
            t = getattr(c, name)
            if t is not None:
                assert (name in zz) == bool((t == 0).all())
    assert zero_constants(None) == [set()]


def test_keys_restrict_the_work_and_keep_the_values():
    full, _ = _mlp_batch(sharpened=True)
    want = check_keys({"fisher_upper", "rel_sd2", "var1_upper_sharp"})
    part, _ = _mlp_batch(sharpened=True, keys=want)
    base = base_keys_for(want, True)
    assert set(base) == {"fisher", "nv2", "u2", "w2", "u2s", "w2s"}
    for name, d in part.keys.items():
        assert set(d) == {"fisher", "fisher_upper", "var2", "var1_upper_sharp"}
        for k, p in d.items():
            _same(p.materialize(), full.keys[name][k].materialize(), rtol=0)
    assert set(base_keys_for(check_keys({"prob_neg2_upper"}), True)) == {"fisher", "nv2"}
    assert set(base_keys_for(check_keys({"input_var_upper"}, DATASET_KEYS), True)) == {"fisher", "u2"}
    with pytest.raises(ValueError, match="unknown result keys"):
        check_keys({"input_var"})


def test_theorem41_bounds_subset_and_names():
    fam = families.get("categorical", C=3)
    c = family_constants(fam, torch.randn(2, 3, dtype=torch.float64), restricted=True, optimised=True, use_eig=False)
    u2, w2 = torch.rand(2, 4, dtype=torch.float64), torch.rand(2, 4, dtype=torch.float64)
    allb = theorem41_bounds(u2, w2, c, 3, "_sharp")
    assert "var1_upper_sharp_opt" in allb and bound_name("var1_upper_opt", "_sharp") == "var1_upper_sharp_opt"
    sub = theorem41_bounds(u2, w2, c, 3, "_sharp", keys=["var2_upper", "var1_lower_opt"])
    assert sorted(sub) == ["var1_lower_sharp_opt", "var2_upper_sharp"]
    torch.testing.assert_close(sub["var2_upper_sharp"], w2 * c.sigma_max_cert[:, None] / 3, rtol=0, atol=0)
    torch.testing.assert_close(allb["var1_lower_sharp_opt"], u2 * u2 * c.M_min_opt[:, None] / 3, rtol=0, atol=0)


def test_all_finite_matches_isfinite():
    x = torch.randn(50, 7, dtype=torch.float64) * 1e300
    assert bool(all_finite(x)) is bool(torch.isfinite(x).all())
    for bad in (math.nan, math.inf, -math.inf):
        y = x.clone()
        y[13, 4] = bad
        assert not bool(all_finite(y))
    assert bool(all_finite(torch.empty(0, 3)))


def test_rel_sd_fast_path_matches_general_path():
    v = torch.tensor([4.0, 0.0, 1.0, -1.0, math.nan, 0.0, math.inf, 2.0], dtype=torch.float64)
    i = torch.tensor([1.0, 0.0, 0.0, 2.0, 1.0, math.nan, math.inf, math.inf], dtype=torch.float64)
    fast = rel_sd(v, i)
    general = rel_sd(v.reshape(-1, 1), i.reshape(-1, 1).expand(-1, 2).contiguous())[:, 0]   # shapes differ
    _same(fast, general, rtol=0)
    num = v.clamp_min(0).sqrt()
    expect = torch.where((i == 0) & (num == 0), torch.zeros_like(num), num / i)
    _same(fast, expect, rtol=0)


def _v1_relative_error_reference(nv1: torch.Tensor, err: torch.Tensor) -> float:
    """The definition, entry by entry: err/nv1 for nv1 > 0, 0 for nv1 = err = 0, ∞ otherwise or for NaN."""
    worst = 0.0
    for n, e in zip(nv1.flatten().tolist(), err.flatten().tolist()):
        if math.isnan(e) or math.isnan(n):
            r = math.inf
        elif n > 0:
            r = e / n
        elif n == 0 and e == 0:
            r = 0.0
        else:
            r = math.inf
        worst = max(worst, r)
    return worst


@pytest.mark.parametrize("case", ["plain", "zeros", "negative", "nan"])
def test_v1_relative_error_one_sync_matches_definition(case):
    from fishersym.numeric.core import EngineOutput
    g = torch.Generator().manual_seed(3)
    nv1 = torch.rand(4, 5, generator=g, dtype=torch.float64)
    err = torch.rand(4, 5, generator=g, dtype=torch.float64) * 1e-14
    if case == "zeros":
        nv1[1, 2] = err[1, 2] = 0.0
    if case == "negative":
        nv1[0, 0] = -1e-30
    if case == "nan":
        err[2, 3] = math.nan
    a = torch.rand(4, 3, generator=g, dtype=torch.float64)
    eng = EngineOutput(h=torch.zeros(4, 2), path="fast",
                       parts={"w": {"nv1": Part(nv1, a, 4), "nv1_err": Part(err, a, 4)},
                              "b": {"nv1": Part(nv1), "nv1_err": Part(err)}})
    assert v1_relative_error(eng) == _v1_relative_error_reference(nv1, err)


@pytest.mark.parametrize("seed", [0, 1])
def test_factored_precision_measurement_matches_dense(seed):
    """The float32 error measured on the factors equals the dense entry-by-entry one up to the float32
    product's own rounding (≤ 2⁻²⁴ relative)."""
    g = torch.Generator().manual_seed(seed)
    F = torch.rand(6, 5, generator=g, dtype=torch.float64) + 0.1
    A = torch.rand(6, 7, generator=g, dtype=torch.float64) + 0.1
    F[2, 1] = 0.0
    got = Part((F * (1 + 1e-4 * torch.randn(6, 5, generator=g, dtype=torch.float64))).float(),
               (A * (1 + 1e-5 * torch.randn(6, 7, generator=g, dtype=torch.float64))).float(), 4)
    ref = Part(F, A, 4)
    e, z = _relative_error(got, ref)
    e_dense, z_dense = _relative_error(Part(got.materialize()), Part(ref.materialize()))
    assert abs(float(e) - float(e_dense)) <= 2 ** -23 * (1 + float(e_dense))
    assert bool(z) == bool(z_dense)
    got.f[2, 1] = 1.0                     # ref = 0, got ≠ 0 at row 1 of input 2
    assert bool(_relative_error(got, ref)[1]) and bool(_relative_error(Part(got.materialize()),
                                                                        Part(ref.materialize()))[1])


def test_per_input_keys_flags_zero_bounds():
    ba, _ = _mlp_batch()
    keys = per_input_keys(ba.eng, ba.consts, None, 2)
    for name, d in keys.items():
        for k, p in d.items():
            const = BOUND_CONSTANTS.get(k)
            expect = const is not None and bool((getattr(ba.consts, const) == 0).all())
            assert p.zero == expect, (name, k)
            if p.zero:
                assert bool(((p.f == 0) | torch.isnan(p.f)).all())


def test_batch_sums_many_returns_separate_tensors_for_shared_factors():
    """Two keys with the same factor object get equal sums in separate tensors (callers divide in place)."""
    f, a = torch.rand(4, 3, dtype=torch.float64), torch.rand(4, 5, dtype=torch.float64)
    got = batch_sums_many({"w": {"x": Part(f, a, 2), "y": Part(f, a, 2)}, "b": {"x": Part(f), "y": Part(f)}})
    for name in ("w", "b"):
        x, y = got[name]["x"], got[name]["y"]
        assert torch.equal(x, y)
        x.div_(2)
        assert not torch.equal(x, y)


def test_factored_relative_error_holds_for_negative_factors():
    # review of issue 12: max(r_max s_max − 1, 1 − r_min s_min) assumed r, s ≥ 0; the corner maximum is
    # exact for any signs (here r = [−0.5, 1], s = [1, 2]: dense maximum 2.0, the old form gave 1.5)
    from fishersym.numeric.parts import Part
    from fishersym.numeric.precision import _relative_error
    F = torch.ones(1, 2, dtype=torch.float64)
    g = torch.tensor([[-0.5, 1.0]], dtype=torch.float64)
    a_ref = torch.ones(1, 2, dtype=torch.float64)
    a_got = torch.tensor([[1.0, 2.0 ** 0.5]], dtype=torch.float64)
    got, ref = Part(g, a_got, 2), Part(F, a_ref, 2)
    e, _ = _relative_error(got, ref)
    dense = ((got.materialize() - ref.materialize()).abs() / ref.materialize()).max()
    assert float(e) == float(dense) == 2.0
