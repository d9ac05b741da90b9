"""Closed forms (both exact paths) against brute force from the definitions (THEORY §2–§3):
enumeration of labels (discrete) or Gauss–Hermite quadrature (Gaussians, exact for these polynomials),
per-label squared score and negative Hessian by autograd of ``log_prob``."""
import pytest
import torch
from torch import nn

from fishersym.numeric import conditional_stats

from test_numeric_helpers import FAMILIES, assert_close_maps, brute_force, make_family, small_mlp


@pytest.mark.parametrize("fam", list(FAMILIES))
@pytest.mark.parametrize("path", ["auto", "generic"])
def test_closed_forms_match_brute_force(fam, path):
    family = make_family(fam)
    model = small_mlp(family.out_dim, seed=3, act=nn.Tanh, widths=(3, 2), scale=0.6)
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    n = 3
    res = conditional_stats(model, x, family, n_samples=n, path=path)
    bf = brute_force(model, x, family, n_samples=n)
    if fam == "gaussian_meanvar":
        assert res.path == "generic"
    for k in ("fisher", "var1", "var2"):
        assert_close_maps(res[k], bf[k], rtol=1e-8, atol_rel=1e-10, label=f"{fam}/{path}/{k}")
    # V₂ must be non-trivial somewhere (hidden layers of a tanh net) so that the test can fail
    assert max(float(v.max()) for v in res.var2.values()) > 1e-6


def test_softplus_sigmoid_stack_brute_force():
    family = make_family("categorical")
    model = nn.Sequential(nn.Linear(2, 3), nn.Softplus(), nn.Sigmoid(), nn.Linear(3, 3), nn.SiLU(),
                          nn.Linear(3, 3)).double()
    x = torch.randn(2, 2, dtype=torch.float64)
    res = conditional_stats(model, x, family)
    assert res.path == "fast"
    bf = brute_force(model, x, family)
    for k in ("fisher", "var1", "var2"):
        assert_close_maps(res[k], bf[k], rtol=1e-8, atol_rel=1e-10, label=k)


def test_prob_negative_exact_matches_enumeration():
    """P(Î₂ < 0) (THEORY §6 item 5) for N = 1 and N = 2 against direct enumeration of label tuples."""
    family = make_family("categorical")
    model = small_mlp(3, seed=1, act=nn.Sigmoid, widths=(3,), scale=1.5)
    x = torch.randn(2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for N in (1, 2):
        res = conditional_stats(model, x, family, n_samples=N)
        from fishersym.numeric.generic import directions
        with torch.no_grad():
            h = family.natural(model(x))
        p = torch.softmax(h, -1)
        name = "0.weight"
        U, W = directions(model, x, family, name, torch.arange(model[0].weight.numel()))
        I = family.sigma_quad(h, U)
        r = torch.eye(3, dtype=torch.float64).unsqueeze(0) - p.unsqueeze(1)  # (B, S, C)
        v = I.unsqueeze(-1) - torch.einsum("bkc,bsc->bks", W, r)
        if N == 1:
            ref = ((v < 0).double() * p.unsqueeze(1)).sum(-1)
        else:
            ref = torch.zeros_like(I)
            for s1 in range(3):
                for s2 in range(3):
                    ref += (((v[..., s1] + v[..., s2]) / 2 < 0).double() * (p[:, s1] * p[:, s2]).unsqueeze(1))
        got = res.prob_neg2[name].reshape(2, -1)
        assert torch.allclose(got, ref, atol=1e-14)
        assert float(got.max()) > 0  # some hidden weight has P(Î₂ < 0) > 0 (THEORY §6 item 5)
        assert bool((got <= res.prob_neg2_upper[name].reshape(2, -1) + 1e-12).all())  # Cantelli
