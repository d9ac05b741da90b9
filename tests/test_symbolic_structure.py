"""Symbolic engine: derivatives against SymPy's own differentiation of the expanded network,
the structural theorems of THEORY §6 proven by SymPy, equality of V₁'s moment and cumulant
forms (Lemma 3.1), and bad input."""
from __future__ import annotations

import random

import pytest
import sympy as sp
import torch

from fishersym import families, symbolic
from fishersym.symbolic import theorems
from fishersym.symbolic.derive import SizeError


def _defs_subs(D):
    vals = {}
    for s, e in D.definitions():
        vals[s] = e.xreplace(vals)
    return vals


def _random_point(D, seed):
    rng = random.Random(seed)
    pt = {s: sp.Rational(rng.randint(-9, 9), 7) for s in D.network.x}
    pt.update({s: sp.Rational(rng.randint(-9, 9), 8) for s in D.network.param_symbols})
    pt.update({s: sp.nsimplify(v) for s, v in D.family.sym_params.items()})
    return pt


@pytest.mark.parametrize("act,famname,kw", [("sigmoid", "bernoulli", {}), ("tanh", "gaussian", {"link": "mean"}),
                                            ("silu", "poisson", {}), ("gelu", "gaussian_meanvar", {}),
                                            ("softplus", "categorical", {"C": 2})])
def test_u_w_match_sympy_diff_of_expanded_network(act, famname, kw):
    """u_i, w_i (forward mode in intermediate symbols) == sympy.diff of the fully expanded h(x; θ)."""
    fam = families.get(famname, **kw)
    net = symbolic.mlp([2, 2, fam.out_dim], act)
    D = symbolic.derive(net, fam)
    vals = _defs_subs(D)
    hx = theorems.expanded_h(D)
    pt = _random_point(D, 1)
    for pd in D:
        s = pd.symbol
        for c in range(fam.C):
            ref_u = sp.diff(hx[c], s).xreplace(pt)
            ref_w = sp.diff(hx[c], s, 2).xreplace(pt)
            got_u = pd.u[c].xreplace(vals).xreplace(pt)
            got_w = pd.w[c].xreplace(vals).xreplace(pt)
            assert abs(complex((got_u - ref_u).evalf(40))) < 1e-25 * (1 + abs(complex(ref_u.evalf(20))))
            assert abs(complex((got_w - ref_w).evalf(40))) < 1e-25 * (1 + abs(complex(ref_w.evalf(20))))


@pytest.mark.parametrize("famname,kw", [("bernoulli", {}), ("poisson", {}), ("gaussian", {"sigma2": 2.0}),
                                        ("categorical", {"C": 3}), ("gaussian_meanvar", {})])
def test_moment_and_cumulant_forms_are_equal(famname, kw):
    """Lemma 3.1: SymPy proves (M₄(u⁴) − I²) = (κ₄(u⁴) + 2I²) per parameter (in h coordinates,
    where no simplex constraint is needed)."""
    fam = families.get(famname, **kw)
    D = symbolic.derive(symbolic.mlp([1, 1, fam.out_dim], "tanh"), fam, n_samples=2)
    F = D.forms
    # generic direction, from the family's tensors in h (independent of the display rewriting)
    U = F.U
    I = sp.expand((sp.Matrix([U]) * fam.sigma_sym * sp.Matrix(U))[0, 0])
    moment = fam.contract4(fam.m4_sym, U) - I ** 2
    cumulant = fam.contract4(fam.kappa4_sym, U) + 2 * I ** 2
    assert sp.simplify(sp.expand(moment - cumulant)) == 0
    # and per parameter, in the display coordinates the derivation stores
    simplex = {}
    if fam.shift_invariant:
        ps = [s for s, _ in F.coords]
        simplex = {ps[-1]: 1 - sp.Add(*ps[:-1])}
    for pd in D:
        diff = (pd.var1_moment - pd.var1_cumulant).xreplace(simplex)
        assert sp.expand(diff) == 0
        assert sp.expand((pd.var1 - pd.var1_moment).xreplace(simplex)) == 0


def test_moment_form_differs_from_wrong_formula():
    """The equality check above can fail: (M₄ − I²) ≠ (κ₄ + 3I²) for the Bernoulli."""
    fam = families.get("bernoulli")
    U = (sp.Symbol("u"),)
    I = (fam.sigma_sym[0, 0] * U[0] ** 2)
    assert sp.simplify(fam.contract4(fam.m4_sym, U) - I ** 2 - fam.contract4(fam.kappa4_sym, U) - 3 * I ** 2) != 0


@pytest.mark.parametrize("famname,kw,out", [("gaussian", {"link": "mean"}, 1), ("bernoulli", {}, 1),
                                            ("poisson", {}, 1), ("categorical", {"C": 3}, 3)])
def test_glm_w_zero(famname, kw, out):
    """THEORY §6.2: for GLMs every w_i ≡ 0, proven twice (derived w and expanded second derivative)."""
    fam = families.get(famname, **kw)
    D = symbolic.derive(symbolic.mlp([2, out], "identity"), fam)
    assert all(pd.w_is_zero for pd in D)
    assert all(theorems.w_zero_by_expansion(D, pd.symbol) for pd in D)
    assert D.summary()["v2_zero_all"]


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "identity"])
def test_piecewise_linear_w_zero(act):
    """THEORY §6.3: piecewise-linear activations give w ≡ 0 a.e. (V₂ ≡ 0) in every layer."""
    fam = families.get("bernoulli")
    D = symbolic.derive(symbolic.mlp([2, 2, 2, 1], act), fam)
    assert all(pd.w_is_zero for pd in D)
    assert all(theorems.w_zero_by_expansion(D, pd.symbol) for pd in D)


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "softplus", "gelu", "silu"])
def test_last_layer_w_zero_hidden_not(act):
    """THEORY §6.1: last layer w ≡ 0; smooth activations give w ≢ 0 in hidden layers (the test can fail)."""
    fam = families.get("bernoulli")
    D = symbolic.derive(symbolic.mlp([2, 2, 1], act), fam)
    last = [pd for pd in D if pd.entry.layer == 2]
    hidden = [pd for pd in D if pd.entry.layer == 1]
    assert all(pd.w_is_zero for pd in last)
    assert all(theorems.w_zero_by_expansion(D, pd.symbol) for pd in last)
    assert not any(pd.w_is_zero for pd in hidden)
    assert not theorems.w_zero_by_expansion(D, hidden[0].symbol)


def test_nonaffine_link_breaks_last_layer_result():
    """With the mean/log-variance link the last layer's log-variance weights have w ≠ 0."""
    fam = families.get("gaussian_meanvar")
    D = symbolic.derive(symbolic.mlp([1, 2], "tanh"), fam)
    assert not all(pd.w_is_zero for pd in D)
    assert D.summary()["v2_nonzero_last"]


def test_gaussian_v1_identity():
    """THEORY §4: V₁ = 2σ⁴‖u‖⁴/N for the Gaussian, every parameter, proven by SymPy."""
    fam = families.get("gaussian", sigma2=0.5, link="mean")
    D = symbolic.derive(symbolic.mlp([2, 2, 1], "tanh"), fam)
    res = theorems.gaussian_v1_identity(D)
    assert res and all(res.values())
    # the identity check can fail: it is not 3σ⁴‖u‖⁴/N
    (s2,) = fam.sym_params
    pd = next(iter(D))
    assert sp.expand(pd.var1 - 3 * s2 ** 2 * pd.u_sq ** 2 / D.N) != 0


def test_bernoulli_half():
    """THEORY §4: V₁ = 0 at p = ½ for the Bernoulli, every parameter; not at p = ⅓."""
    fam = families.get("bernoulli")
    D = symbolic.derive(symbolic.mlp([2, 2, 1], "sigmoid"), fam)
    assert all(theorems.bernoulli_half_zero(D).values())
    (p, _), = D.forms.coords
    pd = next(iter(D))
    assert sp.simplify(pd.var1.subs(p, sp.Rational(1, 3))) != 0


def test_trade_off_conditions():
    """THEORY §6.7 closed forms: w² ≤ (1−2p)²u⁴ (Bernoulli), ‖w‖² ≤ 2σ²‖u‖⁴ (Gaussian)."""
    b = symbolic.derive(symbolic.mlp([1, 1], "identity"), families.get("bernoulli"))
    u, w = b.forms.U[0], b.forms.Wd[0]
    (p, _), = b.forms.coords
    assert sp.expand(b.forms.trade_lhs - w ** 2) == 0
    assert sp.expand(b.forms.trade_rhs - (1 - 2 * p) ** 2 * u ** 4) == 0
    fam = families.get("gaussian", C=2)
    g = symbolic.derive(symbolic.mlp([1, 2], "identity"), fam)
    (s2,) = fam.sym_params
    U, Wd = g.forms.U, g.forms.Wd
    assert sp.expand(g.forms.trade_lhs - (Wd[0] ** 2 + Wd[1] ** 2)) == 0
    assert sp.expand(g.forms.trade_rhs - 2 * s2 * (U[0] ** 2 + U[1] ** 2) ** 2) == 0
    # per parameter: the simplified condition agrees with V₂ ≤ V₁ at random points
    D = symbolic.derive(symbolic.mlp([2, 2, 1], "tanh"), families.get("bernoulli"), n_samples=1)
    rng = random.Random(0)
    for pd in D:
        if pd.trade_lhs == 0:
            continue
        for _ in range(5):
            pt = {s: sp.Rational(rng.randint(-20, 20), 9) for s in pd.var1.free_symbols | pd.var2.free_symbols
                  | pd.trade_lhs.free_symbols | pd.trade_rhs.free_symbols}
            pt[p] = sp.Rational(rng.randint(1, 19), 20)
            if any(c.xreplace(pt) == 0 for c in pd.trade_caveats):
                continue  # the stated caveat: both variances vanish there
            lhs_ok = bool(pd.var2.xreplace(pt) <= pd.var1.xreplace(pt))
            cond_ok = bool(pd.trade_lhs.xreplace(pt) <= pd.trade_rhs.xreplace(pt))
            assert lhs_ok == cond_ok


# ---------------------------------------------------------------------- bad input and API
def test_bad_activation_lists_known():
    with pytest.raises(ValueError, match="known: .*gelu.*sigmoid"):
        symbolic.mlp([2, 1], "swishy")


def test_bad_family_lists_known():
    with pytest.raises(ValueError, match="available: .*bernoulli"):
        symbolic.derive(symbolic.mlp([2, 1], "tanh"), "nope")


@pytest.mark.parametrize("widths", [[2], [2, 0, 1], [2, -1], [2.5, 1], ["a", 1], [True, 1], 3])
def test_bad_widths(widths):
    with pytest.raises(ValueError, match="widths"):
        symbolic.mlp(widths, "tanh")


def test_unknown_parameter_keyerror_lists_names():
    D = symbolic.derive(symbolic.mlp([2, 1], "identity"), "bernoulli")
    with pytest.raises(KeyError, match="W1_1_1"):
        D["W9_9_9"]
    with pytest.raises(KeyError, match="available"):
        symbolic.derive(symbolic.mlp([2, 1], "identity"), "bernoulli", params=["nope"])
    assert D["0.weight[0, 1]"] is D["W1_1_2"]


def test_size_refusal_and_force():
    net = symbolic.mlp([8, 8, 8, 8, 4], "tanh")
    with pytest.raises(SizeError, match="force"):
        symbolic.derive(net, families.get("categorical", C=4))
    small = symbolic.mlp([2, 3, 1], "tanh")
    D = symbolic.derive(small, "bernoulli", params=["W1_1_1"], force=True)
    assert len(D) == 1


def test_torch_names_and_per_layer_activations():
    net = symbolic.mlp([2, 3, 2, 1], ["sigmoid", ("leaky_relu", 0.2)])
    model = net.torch_module()
    names = dict(model.named_parameters())
    assert {p.torch_name for p in net.params} == set(names)
    assert isinstance(model[1], torch.nn.Sigmoid) and isinstance(model[3], torch.nn.LeakyReLU)
    assert model[3].negative_slope == 0.2
    assert net.param("W2_1_3").label == "2.weight[0, 2]"
    with pytest.raises(ValueError, match="hidden layer"):
        symbolic.mlp([2, 3, 1], ["tanh", "tanh"])
