"""Mutation tests: the property checks must fail when a closed form is wrong.

Each test injects one error into the engine's formulas (by wrapping the
function both exact paths call, or the constants the bounds use) and
asserts that the corresponding check raises a counterexample report.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import fishersym.numeric.conditional as conditional
import fishersym.numeric.generic as generic
import fishersym.numeric.mlp as mlp
from fishersym import families
from fishersym.testing.properties import (PropertyViolation, check_bounds, check_closed_forms, check_monte_carlo,
                                          check_unbiased_exact)



def net(seed=0, out=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, out)).double()


X = torch.tensor([[0.3, -1.2], [1.1, 0.4]])


def mutate_base(monkeypatch, fn):
    """Wrap base_quantities where both exact paths look it up."""
    orig = generic.base_quantities

    def wrapped(*args, **kwargs):
        out = orig(*args, **kwargs)
        fn(out, *args)
        return out
    monkeypatch.setattr(generic, "base_quantities", wrapped)
    monkeypatch.setattr(mlp, "base_quantities", wrapped)


@pytest.mark.parametrize("name,params", [("bernoulli", {}), ("categorical", {"C": 3}), ("poisson", {"C": 2}),
                                         ("gaussian", {"C": 2})])
def test_V1_off_by_a_factor_is_caught(monkeypatch, name, params):
    fam = families.get(name, **params)
    model = net(out=fam.out_dim)
    check_closed_forms(model, fam, X)  # holds before the mutation
    mutate_base(monkeypatch, lambda out, *a: out.__setitem__("nv1", out["nv1"] * 1.1))
    with pytest.raises(PropertyViolation, match=r"\[var1 = definition\]"):
        check_closed_forms(model, fam, X)


def test_V2_missing_the_centring_is_caught(monkeypatch):
    """Bernoulli: the uncentred E[(w t)²] = p w² instead of Var(w t) = p(1−p) w²."""
    fam = families.get("bernoulli")
    model = net()

    def uncentred(out, family, h, *rest):
        p = torch.sigmoid(h)
        out["nv2"] = out["nv2"] / (p * (1 - p)) * p
    mutate_base(monkeypatch, uncentred)
    with pytest.raises(PropertyViolation, match=r"\[var2 = definition\]"):
        check_closed_forms(model, fam, X)


def test_fisher_off_by_a_factor_breaks_unbiasedness(monkeypatch):
    fam = families.get("categorical", C=3)
    model = net(out=3)
    mutate_base(monkeypatch, lambda out, *a: out.__setitem__("fisher", out["fisher"] * 1.05))
    with pytest.raises(PropertyViolation, match=r"E\[I1\] = I"):
        check_unbiased_exact(model, fam, X)


@pytest.mark.parametrize("const,key", [("M_max_cert", "var1_upper"), ("sigma_max_cert", "fisher_upper"),
                                       ("M_min_cert", "var1_lower")])
def test_a_bound_constant_too_small_is_caught(monkeypatch, const, key):
    fam = families.get("poisson", C=2)
    model = net(out=2)
    assert check_bounds(model, fam, X, optimised=False) == []
    orig = conditional.family_constants

    def wrong(*args, **kwargs):
        c = orig(*args, **kwargs)
        val = getattr(c, const)
        # an upper constant halved, or a lower constant doubled: both too tight
        setattr(c, const, val * (2.0 if const.endswith("min_cert") else 0.5))
        return c
    monkeypatch.setattr(conditional, "family_constants", wrong)
    with pytest.raises(PropertyViolation, match=rf"\[{key} holds\]"):
        check_bounds(model, fam, X, optimised=False)


def test_monte_carlo_check_catches_a_wrong_variance(monkeypatch):
    fam = families.get("bernoulli")
    model = net(seed=3)
    check_monte_carlo(model, fam, X[:1], reps=3000)
    mutate_base(monkeypatch, lambda out, *a: out.__setitem__("nv1", out["nv1"] * 1.3))
    with pytest.raises(PropertyViolation, match=r"Var\[I1\] = V1"):
        check_monte_carlo(model, fam, X[:1], reps=3000)
