"""Issue 13 regression tests for the symbolic engine and check_model.

Item 4: ``Derivation.evaluate`` refuses a model that does not compute exactly the derivation's
network (wider/narrower/extra layers, another activation or activation setting, bias presence,
shared layers, tied weights, hooks, parametrizations, a custom forward), naming the mismatch,
instead of filling missing entries with zeros.  Item 22 (part): ``check_model`` validates
``max_examples`` and ``perturb`` before hypothesis runs.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fishersym import families, symbolic
from fishersym.testing import check_model
from fishersym.testing.brute import brute_force as oracle


def _derivation(widths=(2, 3, 1), act="tanh", bias=True, family="bernoulli", **fam_params):
    net = symbolic.mlp(list(widths), act, bias=bias)
    return symbolic.derive(net, families.get(family, **fam_params), n_samples=2)


def _x(d=2, B=2, seed=0):
    return torch.randn(B, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _seq(*mods):
    return nn.Sequential(*mods).to(torch.float64)


# ---------------------------------------------------------------------- item 4: mismatches are refused
MISMATCHES = {
    # issue 13 item 4: a wider hidden layer used to be accepted, its extra units read as zeros
    "wider hidden layer": (lambda: _seq(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)),
                           r"module '0' of the model is Linear\(2, 4, bias=True\) but layer 1 .* Linear\(2, 3"),
    # issue 13 item 4: a wider input layer (more inputs than the derivation's x)
    "wider input": (lambda: _seq(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)),
                    r"Linear\(3, 3, bias=True\) but layer 1 .* Linear\(2, 3, bias=True\)"),
    # issue 13 item 4: another activation used to be ignored (the derivation's tanh was evaluated)
    "other activation": (lambda: _seq(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1)),
                         r"module '1' of the model is Sigmoid\(\) but the derivation's activation 1 is tanh"),
    # issue 13 item 4: no bias in the model where the derivation has one
    "no bias": (lambda: _seq(nn.Linear(2, 3, bias=False), nn.Tanh(), nn.Linear(3, 1)),
                r"Linear\(2, 3, bias=False\) but layer 1 .* bias=True"),
    # issue 13 item 4: an extra layer
    "deeper": (lambda: _seq(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)),
               r"has 5 modules but the derivation's network has 3"),
    # issue 13 item 4: not a Linear where the derivation has one
    "bilinear": (lambda: _seq(nn.Linear(2, 3), nn.Tanh(), nn.Bilinear(3, 3, 1)),
                 r"module '2' of the model is a Bilinear"),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_evaluate_refuses_another_architecture(case):
    # issue 13 item 4
    make, match = MISMATCHES[case]
    D = _derivation()
    with pytest.raises(ValueError, match=match):
        D.evaluate(make(), _x(3 if case == "wider input" else 2), optimised=False)


def test_evaluate_refuses_narrower_layer_and_bias_where_there_is_none():
    # issue 13 item 4: the derivation without bias given a model with bias; a narrower output layer
    D = _derivation(bias=False)
    with pytest.raises(ValueError, match=r"bias=True\) but layer 1 .* bias=False"):
        D.evaluate(_seq(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)), _x(), optimised=False)
    D = _derivation(widths=(2, 3, 3), family="categorical", C=3)
    with pytest.raises(ValueError, match=r"Linear\(3, 2, bias=True\) but layer 2 .* Linear\(3, 3"):
        D.evaluate(_seq(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)), _x(), optimised=False)


@pytest.mark.parametrize("act,module,match", [
    ("leaky_relu:0.2", nn.LeakyReLU(0.1), r"LeakyReLU\(negative_slope=0.1\) but .* LeakyReLU\(negative_slope=0.2\)"),
    ("gelu", nn.GELU(approximate="tanh"), r"GELU\(approximate='tanh'\) but .* gelu = GELU\(approximate='none'\)"),
    ("softplus", nn.Softplus(beta=2.0), r"Softplus\(beta=2.0, threshold=20.0\) but .* softplus"),
])
def test_evaluate_refuses_another_activation_setting(act, module, match):
    # issue 13 item 4: the activation's settings define the function (slope, approximation, beta)
    D = _derivation(act=act)
    with pytest.raises(ValueError, match=match):
        D.evaluate(_seq(nn.Linear(2, 3), module, nn.Linear(3, 1)), _x(), optimised=False)


def test_evaluate_refuses_shared_linear_and_tied_weights():
    # issue 13 item 4 (and item 1's idiom): one Linear used twice, and a weight tied across layers
    D = _derivation(widths=(3, 3, 3, 1))
    lin = nn.Linear(3, 3)
    shared = _seq(lin, nn.Tanh(), lin, nn.Tanh(), nn.Linear(3, 1))
    with pytest.raises(ValueError, match=r"modules '0' and '2' of the model are the same nn.Linear instance"):
        D.evaluate(shared, _x(3), optimised=False)
    tied = _seq(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1))
    tied[2].weight = tied[0].weight
    with pytest.raises(ValueError, match=r"parameters '0.weight' and '2.weight' .* same tensor \(tied weights\)"):
        D.evaluate(tied, _x(3), optimised=False)


def test_evaluate_accepts_a_shared_activation_instance_and_gets_it_right():
    """One activation instance used twice computes the same function as two instances: accepted,
    and equal to the label-space brute force (fishersym.testing.brute: enumeration + autograd)."""
    D = _derivation(widths=(2, 2, 2, 1), act="tanh")
    act = nn.Tanh()
    model = _seq(nn.Linear(2, 2), act, nn.Linear(2, 2), act, nn.Linear(2, 1))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = _x(seed=4)
    got = D.evaluate(model, x, optimised=False)
    for b in range(x.shape[0]):
        ref = oracle(model, x[b:b + 1], families.get("bernoulli"), 2)
        for key in ("fisher", "var1", "var2"):
            for name, v in getattr(ref, key).items():
                assert torch.allclose(got[key][name][b], v.reshape(v.shape[-len(got[key][name].shape) + 1:]),
                                      rtol=1e-10, atol=1e-12), (key, name)


def test_evaluate_refuses_hooks_parametrizations_custom_forward_and_bad_values():
    # issue 13 item 4: anything that makes forward compute something else than the network
    D = _derivation()
    base = D.network.torch_module(seed=1)
    x = _x()
    hooked = copy.deepcopy(base)
    hooked[0].register_forward_hook(lambda m, i, o: 2 * o)
    with pytest.raises(ValueError, match="forward hooks"):
        D.evaluate(hooked, x, optimised=False)
    pre = copy.deepcopy(base)
    pre[2].register_forward_pre_hook(lambda m, i: (i[0] * 0,))
    with pytest.raises(ValueError, match="forward hooks"):
        D.evaluate(pre, x, optimised=False)
    par = copy.deepcopy(base)
    torch.nn.utils.parametrizations.weight_norm(par[0])
    with pytest.raises(ValueError, match="parametrized|parameter '0.parametrizations"):
        D.evaluate(par, x, optimised=False)

    class Twice(nn.Sequential):
        def forward(self, x):
            return 2 * super().forward(x)
    with pytest.raises(ValueError, match="not an nn.Sequential with the standard forward"):
        D.evaluate(Twice(*copy.deepcopy(base)), x, optimised=False)

    class Named(nn.Module):  # the right parameter names, another computation
        def __init__(self):
            super().__init__()
            self.add_module("0", nn.Linear(2, 3))
            self.add_module("2", nn.Linear(3, 1))

        def forward(self, x):
            return self._modules["2"](torch.relu(self._modules["0"](x)))
    with pytest.raises(ValueError, match="the model is a Named, not an nn.Sequential"):
        D.evaluate(Named().double(), x, optimised=False)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        D.evaluate({"0.weight": torch.zeros(3, 2)}, x, optimised=False)
    nan = copy.deepcopy(base)
    with torch.no_grad():
        nan[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"parameter '0.weight' contains non-finite values"):
        D.evaluate(nan, x, optimised=False)
    with pytest.raises(ValueError, match="x must be real and finite"):
        D.evaluate(base, torch.tensor([[0.0, float("inf")]]), optimised=False)
    with pytest.raises(ValueError, match="batch size 0"):
        D.evaluate(base, torch.zeros(0, 2), optimised=False)


def test_evaluate_still_accepts_the_derivations_own_module_in_float32():
    D = _derivation()
    model = D.network.torch_module(dtype=torch.float32, seed=2)
    out = D.evaluate(model, _x(), optimised=False)
    assert out["fisher"]["0.weight"].shape == (2, 3, 2)
    assert all(torch.isfinite(v).all() for v in out["var1"].values())


# ---------------------------------------------------------------------- item 22: check_model settings
@pytest.mark.parametrize("kwargs,exc,match", [
    ({"perturb": -0.1}, ValueError, r"perturb must be a finite number >= 0 .* got -0.1"),
    ({"perturb": float("nan")}, ValueError, r"perturb must be a finite number >= 0"),
    ({"perturb": float("inf")}, ValueError, r"perturb must be a finite number >= 0"),
    ({"perturb": "0.1"}, TypeError, r"perturb must be a number >= 0, got '0.1'"),
    ({"max_examples": 0}, ValueError, r"max_examples must be a positive integer .* got 0"),
    ({"max_examples": -3}, ValueError, r"max_examples must be a positive integer .* got -3"),
    ({"max_examples": 2.5}, TypeError, r"max_examples must be a positive integer, got 2.5"),
])
def test_check_model_validates_its_settings_up_front(kwargs, exc, match):
    # issue 13 item 22: hypothesis' InvalidArgument used to surface from inside the first property
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1)).double()
    with pytest.raises(exc, match=match):
        check_model(model, "bernoulli", input_shape=(2,), properties=["nonnegative"], **kwargs)


def test_check_model_accepts_zero_perturbation_and_numpy_integers():
    import numpy as np
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1)).double()
    rep = check_model(model, "bernoulli", input_shape=(2,), properties=["nonnegative"], perturb=0.0,
                      max_examples=np.int64(2))
    assert rep.ok, str(rep)
