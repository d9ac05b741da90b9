"""The MLP fast path's second-order sweep (issue 12 "Depth costs O(L²)", THEORY §7).

``_second_derivatives`` carries factor rows near the top and, from a fold layer s down, the
per-output Hessians P^l_a = ∂²h_a/∂z^l∂z^l.  Every choice of s (and of the batch chunking) must give
D^l = ∂²h/∂(b^l_j)² exactly; the oracle is autograd's Hessian of h with respect to each bias
vector (z^l = W^l a^{l−1} + b^l, so ∂²h/∂(z^l_j)² = ∂²h/∂(b^l_j)²), and, end to end, the
label-space brute force of fishersym.testing.brute for V₂.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, vmap

import fishersym.numeric.mlp as mlp
from fishersym import families
from fishersym.numeric import conditional_stats
from fishersym.numeric.mlp import mlp_engine, plan_mlp
from fishersym.testing.brute import brute_force

ACTS = {
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "leaky": lambda: nn.LeakyReLU(0.1),
    "softplus": nn.Softplus, "gelu": nn.GELU, "elu": nn.ELU, "silu": nn.SiLU,
}


def deep_mlp(acts: list[str], widths: list[int], C: int, top: str | None = None, seed: int = 0) -> nn.Sequential:
    """Linear layers of the given widths (input widths[0]) with acts[i] after hidden layer i,
    the last Linear to C outputs, then ``top`` (an activation before the link) if given."""
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    for i, a in enumerate(acts):
        lin = nn.Linear(widths[i], widths[i + 1])
        nn.init.normal_(lin.weight, std=1.0 / widths[i] ** 0.5 * 1.3)
        nn.init.normal_(lin.bias, std=0.5)
        mods += [lin, ACTS[a]()]
    mods.append(nn.Linear(widths[-1], C))
    if top:
        mods.append(ACTS[top]())
    return nn.Sequential(*mods).double()


def bias_hessian_diag(model: nn.Sequential, fam, x: torch.Tensor) -> list[torch.Tensor]:
    """(B, C, n_l) diagonal of ∂²h/∂(b^l)² per Linear layer, by autograd (torch.func.hessian)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    out = []
    for name in [k for k in params if k.endswith("bias")]:
        def h_of(b, x1, name=name):
            return fam.link(functional_call(model, {**params, name: b}, (x1.unsqueeze(0),)))[0]
        H = vmap(hessian(h_of), in_dims=(None, 0))(params[name], x)      # (B, C, n, n)
        out.append(torch.diagonal(H, dim1=-2, dim2=-1))
    return out


def engine_D(model, fam, x) -> list[torch.Tensor]:
    plan, why = plan_mlp(model, fam)
    assert plan is not None, why
    eo = mlp_engine(model, x, fam, plan, dict(model.named_parameters()))
    B, C = eo.h.shape
    return [torch.zeros(B, C, lin.out_features, dtype=x.dtype) if d is None else d
            for d, (_, lin) in zip(eo.info["D"], plan.linears)]


def valid_folds(model, fam) -> list[int]:
    """Every fold layer s the sweep accepts for this model (−1: factor rows only)."""
    plan, _ = plan_mlp(model, fam)
    L = len(plan.linears)
    acts = [a for a in plan.acts]
    curved = [any(not isinstance(m, (nn.ReLU, nn.LeakyReLU)) for m in a) for a in acts]
    n = [lin.out_features for _, lin in plan.linears]
    K = [0] * L
    for l in range(L - 2, -1, -1):
        K[l] = K[l + 1] + (n[l + 1] if curved[l + 1] else 0)
    return [-1] + [s for s in range(L - 1) if K[s]]


CASES = [
    # (activations of the hidden layers, widths, C, family, activation after the last Linear)
    (["sigmoid"] * 8, [4, 5, 3, 4, 5, 4, 3, 5, 4], 3, "categorical", None),
    (["tanh", "relu", "softplus", "leaky", "gelu", "sigmoid", "elu", "silu", "tanh"],
     [3, 4, 5, 4, 3, 5, 4, 3, 4, 5], 1, "bernoulli", None),
    (["sigmoid", "tanh", "relu", "relu", "softplus", "tanh"], [5, 3, 4, 5, 3, 4, 3], 4, "categorical", "tanh"),
    (["gelu", "silu", "elu", "softplus", "sigmoid", "tanh", "gelu"], [3, 5, 5, 4, 3, 4, 5, 3], 2, "poisson",
     "sigmoid"),
]


def _family(name: str, C: int):
    return families.get(name) if name == "bernoulli" else families.get(name, C=C)


_SWITCH = mlp._switch_layer


@pytest.mark.parametrize("case", range(len(CASES)))
def test_every_fold_layer_and_chunking_matches_autograd(case, monkeypatch):
    acts, widths, C, fname, top = CASES[case]
    fam = _family(fname, C)
    model = deep_mlp(acts, widths, C, top, seed=case)
    x = torch.randn(5, widths[0], dtype=torch.float64, generator=torch.Generator().manual_seed(case))
    ref = bias_hessian_diag(model, fam, x)
    folds = valid_folds(model, fam)
    assert len(folds) >= 5                                   # the Hessian state is exercised at several depths
    for chunk in (1, mlp._CHUNK_ELEMS):                      # one input per chunk, and the default
        monkeypatch.setattr(mlp, "_CHUNK_ELEMS", chunk)
        for s in folds + [None]:
            monkeypatch.setattr(mlp, "_switch_layer", _SWITCH if s is None else (lambda n, K, C, s=s: s))
            got = engine_D(model, fam, x)
            for l, (g, r) in enumerate(zip(got, ref)):
                scale = r.abs().max().clamp_min(1e-300)
                assert float((g - r).abs().max() / scale) <= 1e-12, (case, chunk, s, l)


def test_fold_layer_without_curvature_above_is_refused():
    W = [torch.randn(3, 2, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)]
    d1 = [torch.rand(4, 3, dtype=torch.float64), torch.rand(4, 2, dtype=torch.float64)]
    R = [torch.randn(4, 2, 3, dtype=torch.float64), None]       # nothing curved above layer 0
    with pytest.raises(ValueError, match="no curvature above"):
        mlp._second_derivatives(W, R, d1, 4, 2, switch=0)


def test_cost_model_switch_depths_as_documented():
    """The depths from which the sweep folds into Hessians (width 128, every hidden layer curved),
    as stated in the mlp module docstring: 7 layers for C = 1, 11 for C = 2, 38 for C = 10; and
    once folding, it keeps folding at greater depth."""
    def fold(L, C, width=128):
        n = [width] * (L - 1) + [C]
        K = [0] * L
        for l in range(L - 2, -1, -1):
            K[l] = K[l + 1] + n[l + 1]
        return mlp._switch_layer(n, K, C)
    for C, first in ((1, 7), (2, 11), (10, 38)):
        assert [fold(L, C) >= 0 for L in range(2, first + 12)] == [L >= first for L in range(2, first + 12)], C
    assert "7 layers for C = 1, 11 for C = 2, 38 for C = 10" in " ".join(mlp.__doc__.split())


@pytest.mark.parametrize("s", [-1, 2])
def test_var2_matches_label_space_brute_force_deep(s, monkeypatch):
    """End to end: V₂ (and I, V₁) of a depth-7 tanh/softplus MLP equal the brute-force oracle, with
    factor rows only (s = −1) and with the Hessian state from layer 2 down."""
    monkeypatch.setattr(mlp, "_switch_layer", lambda n, K, C: s)
    fam = families.get("categorical", C=3)
    model = deep_mlp(["tanh", "softplus", "sigmoid", "tanh", "softplus", "tanh"], [2, 3, 4, 3, 3, 4, 3], 3, seed=7)
    x = torch.randn(1, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    res = conditional_stats(model, x, fam, path="fast")
    bf = brute_force(model, x, fam)
    assert res.path == "fast"
    for key in ("fisher", "var1", "var2"):
        ref = getattr(bf, key)
        top = max(float(r.abs().max()) for r in ref.values())      # exact zeros (last layer's w) vs rounding
        for name, r in ref.items():
            g = res[key][name].reshape(r.shape)
            assert torch.allclose(g, r, rtol=1e-10, atol=1e-13 * top), (key, name)
