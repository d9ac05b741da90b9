"""The fast factored MLP path (THEORY §7) against the generic torch.func path: 1e-10 relative, float64,
on random MLPs (depth 1–4, widths 1–6, every supported activation, every elementwise-link family)."""
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from fishersym import families
from fishersym.numeric import conditional_stats, dataset_stats

ACTS = [nn.Sigmoid, nn.Tanh, nn.ReLU, lambda: nn.LeakyReLU(0.1), nn.ELU, lambda: nn.Softplus(beta=1.5),
        nn.GELU, lambda: nn.GELU(approximate="tanh"), nn.SiLU, nn.Identity, lambda: nn.Hardtanh(-0.8, 0.9),
        lambda: nn.Dropout(0.3)]
FAMS = [lambda: families.get("gaussian", C=2, sigma2=0.5),
        lambda: families.get("gaussian", C=1, link="mean", sigma2=2.0),
        lambda: families.get("bernoulli"), lambda: families.get("categorical", C=4),
        lambda: families.get("poisson", C=2)]


@st.composite
def mlps(draw):
    fam = FAMS[draw(st.integers(0, len(FAMS) - 1))]()
    depth = draw(st.integers(1, 4))
    widths = [draw(st.integers(1, 6)) for _ in range(depth - 1)]
    d_in = draw(st.integers(1, 4))
    layers, d = [], d_in
    for w in widths:
        layers.append(nn.Linear(d, w, bias=draw(st.booleans())))
        for _ in range(draw(st.integers(1, 2))):
            layers.append(ACTS[draw(st.integers(0, len(ACTS) - 1))]())
        d = w
    layers.append(nn.Linear(d, fam.out_dim))
    if draw(st.booleans()) and fam.name != "poisson":
        layers.append(ACTS[draw(st.sampled_from([0, 1, 5, 8]))]())  # a smooth activation after the last Linear
    seed = draw(st.integers(0, 2 ** 16))
    torch.manual_seed(seed)
    model = nn.Sequential(*layers).double().eval()
    x = torch.randn(3, d_in, dtype=torch.float64)
    return model, fam, x


def _agree(a, b, label, ref=None):
    # lower bounds whose certified constant is an eigenvalue ≈ 0 are rounding noise: scale by the upper bound
    ref = b if ref is None else ref
    scale = max(max(float(v.abs().max()) for v in ref.values()), 1e-300)
    for n in b:
        diff = (a[n] - b[n]).abs()
        tol = 1e-10 * b[n].abs() + 1e-13 * ref[n].abs() + 1e-13 * scale
        assert bool((diff <= tol).all()), (label, n, float(diff.max()))


@settings(max_examples=40, deadline=None)
@given(mlps())
def test_fast_equals_generic(case):
    model, fam, x = case
    rf = conditional_stats(model, x, fam, n_samples=2)
    rg = conditional_stats(model, x, fam, n_samples=2, path="generic")
    assert rf.path == "fast" and rg.path == "generic"
    assert set(rf.keys()) == set(rg.keys())
    for k in rf.keys():
        if k.startswith("rel_sd"):
            continue  # ratios of the compared keys (0/0 for dead units)
        _agree(rf[k], rg[k], k, rg[k.replace("lower", "upper")])


def test_fast_equals_generic_dataset_and_groups():
    torch.manual_seed(0)
    fam = families.get("categorical", C=3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.Sigmoid(), nn.Linear(4, 3), nn.GELU(),
                          nn.Linear(3, 3)).double()
    x = torch.randn(9, 2, 3, dtype=torch.float64)
    for scheme in ("all", "iid"):
        kw = dict(scheme=scheme, n_samples=3, batch_size=4, group_bounds=True, progress=False,
                  groups={"hidden": ["1", "3"]})
        rf = dataset_stats(model, x, fam, **kw)
        rg = dataset_stats(model, x, fam, path="generic", **kw)
        for k in rf.keys():
            if not k.startswith("rel_sd"):
                u = lambda r, key: {n: v.unsqueeze(0) for n, v in r[key].items()}  # noqa: E731
                _agree(u(rf, k), u(rg, k), k, u(rg, k.replace("lower", "upper")))
        for g in rf.groups:
            for k, v in rf.groups[g].items():
                ref = rg.groups[g].get(k.replace("lower", "upper"), v)
                assert bool(((v - rg.groups[g][k]).abs() <= 1e-10 * v.abs() + 1e-13 * ref.abs()).all()), (g, k)
