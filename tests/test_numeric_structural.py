"""THEORY §6 structural results as theorem tests (items 1–6), and input validation."""
import pytest
import torch
from torch import nn

from fishersym import families
from fishersym.numeric import GENERIC_MAX_PARAMS, conditional_stats, dataset_stats

from test_numeric_helpers import brute_force, make_family, small_mlp

X = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(9))


@pytest.mark.parametrize("fam", ["gaussian", "bernoulli", "categorical", "poisson"])
def test_last_layer_and_glm_v2_zero(fam):
    """Items 1–2: h is affine in the last layer (and in a GLM's weights): V₂ = 0, Î₂ exact."""
    family = make_family(fam)
    mlp = small_mlp(family.out_dim, seed=1, act=nn.Sigmoid, widths=(3,))
    r = conditional_stats(mlp, X, family)
    assert float(r.var2["2.weight"].abs().max()) == 0 and float(r.var2["2.bias"].abs().max()) == 0
    assert float(r.var2["0.weight"].max()) > 0  # hidden layer of a smooth net: V₂ > 0 (item 3)
    glm = nn.Sequential(nn.Linear(2, family.out_dim)).double()
    g = conditional_stats(glm, X, family, path="generic")
    assert all(float(v.abs().max()) == 0 for v in g.var2.values())
    assert all(float(v.max()) > 0 for v in g.var1.values()) or fam == "bernoulli"


def test_second_to_last_sigmoid_zero_preactivation_and_saturation():
    """Item 1 (Remark 4.5): w ∝ σ''(z) = 0 at z = 0 for the sigmoid; both variances → 0 under saturation."""
    family = make_family("bernoulli")
    model = nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 1)).double()
    x = X[:1]
    with torch.no_grad():
        model[0].bias.copy_(-(model[0].weight @ x[0]))  # pre-activations exactly 0 … up to rounding
        model[0].bias[1] += 40.0                        # unit 1 saturated
    r = conditional_stats(model, x, family)
    assert float(r.var2["0.weight"][0, 0].abs().max()) < 1e-28
    assert float(r.var2["0.weight"][0, 1].abs().max()) < 1e-30 and float(r.var1["0.weight"][0, 1].max()) < 1e-30
    assert float(r.var1["0.weight"][0, 0].max()) > 0


def test_softplus_v2_vanishes_at_large_preactivation():
    family = make_family("gaussian")
    model = nn.Sequential(nn.Linear(1, 1), nn.Softplus(threshold=100.0), nn.Linear(1, 2)).double()
    vals = []
    for b in (0.0, 10.0, 30.0):
        with torch.no_grad():
            model[0].weight.fill_(1.0)
            model[0].bias.fill_(b)
        r = conditional_stats(model, torch.zeros(1, 1, dtype=torch.float64), family)
        vals.append((float(r.var2["0.bias"]), float(r.var1["0.bias"])))
    assert vals[2][0] < 1e-20 * vals[0][0] and vals[2][1] > 0.5 * vals[0][1]


@pytest.mark.parametrize("act", [nn.ReLU, lambda: nn.LeakyReLU(0.2), nn.Identity, nn.Hardtanh])
def test_piecewise_linear_nets_v2_zero(act):
    """Item 3: every diagonal second derivative vanishes a.e. — checked by brute force too."""
    family = make_family("categorical")
    model = small_mlp(3, seed=5, act=act, widths=(4, 3), scale=1.0)
    r = conditional_stats(model, X, family)
    assert all(float(v.abs().max()) == 0 for v in r.var2.values())
    bf = brute_force(model, X[:2], family)
    assert all(float(v.abs().max()) < 1e-20 for v in bf["var2"].values())
    assert any(float(v.max()) > 0 for v in r.var1.values())


class ScaledLinear(nn.Module):
    """θ = c·φ for the weight (item 4)."""

    def __init__(self, lin, c):
        super().__init__()
        self.c = c
        self.phi = nn.Parameter(lin.weight.detach() / c)
        self.bias = nn.Parameter(lin.bias.detach().clone())

    def forward(self, x):
        return nn.functional.linear(x, self.c * self.phi, self.bias)


def test_rescaling_invariance():
    """Item 4: θ = cφ multiplies I by c², V₁, V₂ by c⁴; V₂/V₁ and √V/I are invariant."""
    family = make_family("poisson")
    base = small_mlp(1, seed=2, act=nn.Tanh, widths=(3,), scale=0.5)
    c = 3.0
    scaled = nn.Sequential(ScaledLinear(base[0], c), nn.Tanh(), base[2]).double()
    a = conditional_stats(base, X, family)
    b = conditional_stats(scaled, X, family)
    assert b.path == "generic"
    assert torch.allclose(b.fisher["0.phi"], c ** 2 * a.fisher["0.weight"], rtol=1e-10)
    for k in ("var1", "var2"):
        assert torch.allclose(b[k]["0.phi"], c ** 4 * a[k]["0.weight"], rtol=1e-10)
    for k in ("rel_sd1", "rel_sd2"):
        assert torch.allclose(b[k]["0.phi"], a[k]["0.weight"], rtol=1e-10)


def test_softmax_shift_invariance():
    """Item 6: adding c·𝟙 to the logits (via the last bias) changes nothing."""
    family = make_family("categorical")
    m1 = small_mlp(3, seed=8, act=nn.GELU, widths=(3,))
    m2 = small_mlp(3, seed=8, act=nn.GELU, widths=(3,))
    with torch.no_grad():
        m2[2].bias += 5.0
    a, b = conditional_stats(m1, X, family), conditional_stats(m2, X, family)
    for k in a.keys():
        if k.endswith(("_lower_sharp", "_lower")) and k.startswith("var1"):
            continue  # certified λ̃_min is an eigenvalue ≈ 0: rounding noise
        for n in a[k]:
            assert torch.allclose(a[k][n], b[k][n], rtol=1e-8, atol=1e-12), (k, n)


def test_one_over_n_scaling_and_nonnegativity():
    """Item 5 (the 1/N law itself is checked against simulation in test_numeric_mc)."""
    family = make_family("categorical")
    model = small_mlp(3, seed=3, act=nn.Sigmoid, widths=(3,))
    r1, r5 = conditional_stats(model, X, family), conditional_stats(model, X, family, n_samples=5)
    for k in ("var1", "var2"):
        for n in r1[k]:
            assert torch.allclose(r5[k][n], r1[k][n] / 5, rtol=1e-12)
            assert bool((r1[k][n] >= -1e-15).all())


# ----------------------------------------------------------------- bad input

def test_output_size_mismatch_names_both_sizes():
    model = small_mlp(2, seed=0)
    with pytest.raises(ValueError, match=r"size 2.*expects 3"):
        conditional_stats(model, X, families.get("categorical", C=3))


def test_nonfinite_parameters_inputs_outputs():
    fam = make_family("gaussian")
    model = small_mlp(2, seed=0)
    with pytest.raises(ValueError, match="inputs"):
        conditional_stats(model, torch.full((2, 2), float("nan"), dtype=torch.float64), fam)
    with torch.no_grad():
        model[0].weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="0.weight"):
        conditional_stats(model, X, fam)
    model = small_mlp(2, seed=0)
    with torch.no_grad():
        model[0].bias.fill_(1e300)
        model[2].bias.fill_(1e300)                        # every tanh unit → 1
        model[-1].weight.fill_(1e308)                     # 4 · 1e308 overflows to inf
    with pytest.raises(ValueError, match="non-finite"):
        conditional_stats(model, X, fam)


def test_batchnorm_training_and_dropout_training_refused():
    fam = make_family("gaussian")
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)).double()
    with pytest.raises(ValueError, match="batch"):
        conditional_stats(model, X, fam)
    model.eval()
    r = conditional_stats(model, X, fam)
    assert r.path == "fast" and "per-layer" in r.info["path_reason"]     # BatchNorm in eval: a per-layer rule
    drop = nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.5), nn.Linear(3, 2)).double()
    with pytest.raises(ValueError, match="eval"):
        conditional_stats(drop, X, fam)
    drop.eval()
    assert conditional_stats(drop, X, fam).path == "fast"


def test_path_override_and_generic_limit():
    fam = make_family("gaussian")
    model = small_mlp(2, seed=0)
    assert conditional_stats(model, X, fam, path="generic").path == "generic"
    conv = nn.Sequential(nn.Linear(2, 4), nn.GroupNorm(2, 4), nn.Linear(4, 2)).double()
    with pytest.raises(ValueError, match="fast path cannot"):                # GroupNorm has no per-layer rule
        conditional_stats(conv, X, fam, path="fast")
    # above max_params "auto" takes the reverse path, which refuses up front when the exact w of the
    # tensors where V₂ ≡ 0 is not proved (here: below the GroupNorm) would exceed max_params entries
    with pytest.raises(ValueError, match="could not be proved.*max_params=10"):
        conditional_stats(conv, X, fam, max_params=10)
    assert GENERIC_MAX_PARAMS >= 10_000


def test_float32_precision_flag_and_table():
    fam = families.get("categorical", C=2)
    model = small_mlp(2, seed=0).float()
    with torch.no_grad():  # p ≈ (½, ½): for the last bias N·V₁ = p₁p₂(p₁ − p₂)² ≪ M₄ ≈ I² = (p₁p₂)²
        model[-1].weight.zero_()
        model[-1].bias.copy_(torch.tensor([0.005, 0.0]))
    r = conditional_stats(model, X.float(), fam)
    assert r.precision_lost and r.dtype == torch.float32
    r64 = conditional_stats(model.double(), X, fam)
    assert not r64.precision_lost
    t = dataset_stats(model, X, fam, progress=False).table(keys=("fisher", "var1", "var2", "var1_upper"))
    assert "0.weight" in t and "var1_upper" in t
    assert "fisher" in r64.table(by="group")
