"""The activation registry (fishersym.activations): every entry against independent references,
and every side of the package reading from it (issue 9 item 3, "one activation registry").

References: torch's autograd of the torch module (σ′, σ″), torch's forward (φ), SymPy's
``diff`` of φ (φ′, φ″) and the label-space oracle of fishersym.testing.brute (the symbolic
derivation of a tiny network with the activation).  Points are random (seeded) and kept
1e-3 away from each entry's kinks; the kinks themselves are checked against autograd's
conventions separately.
"""
from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import find
from torch import nn

from fishersym import activations as reg
from fishersym import families, symbolic
from fishersym.experiments import mlp as exp_mlp
from fishersym.numeric import activations as num_act
from fishersym.numeric.layers import elementwise as ew_layer
from fishersym.numeric.layers.base import RULES
from fishersym.symbolic import activations as sym_act
from fishersym.symbolic import network as sym_network
from fishersym.symbolic.evaluate import numeric_modules
from fishersym.testing import strategies as fst
from fishersym.testing.brute import brute_force

#: a non-default value for every hyper-parameter of the registry (a new one must be added here)
ALT = {"negative_slope": 0.3, "alpha": 0.6, "beta": 1.7, "threshold": 3.0, "approximate": "tanh",
       "min_val": -0.5, "max_val": 0.7}
#: the same for the symbolic engine, which refuses Softplus thresholds below 20 (sympy_refuses)
ALT_SYM = {**ALT, "threshold": 30.0}


def _cases() -> list[tuple[str, dict]]:
    """(name, hyper-parameters): torch's defaults, the strategies' example, each non-default value."""
    out = []
    for name, s in reg.REGISTRY.items():
        variants = [{}, dict(s.example)] + [{h.name: ALT[h.name]} for h in s.hyper if h.name in ALT]
        seen = []
        for v in variants:
            p = s.params(**v)
            if p not in seen:
                seen.append(p)
                out.append((name, p))
    return out


CASES = _cases()
IDS = [f"{n}-{'-'.join(map(str, p.values()))}" if p else n for n, p in CASES]
Z = sp.Symbol("z", real=True)


def test_every_hyper_parameter_has_a_test_value():
    missing = {h.name for s in reg.REGISTRY.values() for h in s.hyper} - set(ALT)
    assert not missing, f"add a non-default value for {sorted(missing)} to ALT"


def _points(spec, params, n=400, seed=0, lim=6.0) -> torch.Tensor:
    """Random float64 points in [−lim, lim] at least 1e-3 from every kink of the entry."""
    g = torch.Generator().manual_seed(seed)
    z = (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1) * lim
    for k in spec.kinks(**params):
        z = z[(z - k).abs() > 1e-3]
    assert z.numel() > n // 2
    return z


def _autograd(module: nn.Module, z: torch.Tensor):
    """(σ, σ′, σ″) of an elementwise module by reverse-mode autograd (sum trick: ∂/∂z_i Σ σ(z_j) = σ′(z_i))."""
    z = z.clone().requires_grad_(True)
    y = module(z)
    (d1,) = torch.autograd.grad(y.sum(), z, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), z, allow_unused=True) if d1.requires_grad else (None,)
    return y.detach(), d1.detach(), (torch.zeros_like(z) if d2 is None else d2.detach())


def _close(a, b, rtol=1e-12, atol=1e-14, what=""):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    a, b = torch.broadcast_tensors(a, b)
    bad = ~torch.isclose(a, b, rtol=rtol, atol=atol)
    assert not bool(bad.any()), (what, a[bad][:5], b[bad][:5])


# ---------------------------------------------------------------- (a) numeric σ′, σ″ = autograd
@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_numeric_derivatives_equal_autograd(name, params):
    spec = reg.get(name)
    m = spec.make(**params)
    z = _points(spec, params)
    got = num_act.derivs(m, z)
    ref = _autograd(m, z)
    # rtol 1e-12, plus an absolute 1e-13 (≈ 450 ulps of O(1) terms): torch's own derivative
    # formulas cancel where a unit saturates (1 + tanh u → 0 in GELU-tanh), ours do not
    for n in range(3):
        _close(got[n], ref[n], rtol=1e-12, atol=1e-13, what=(name, n))


KINKED = [(i, c) for i, c in zip(IDS, CASES) if reg.get(c[0]).kinks(**c[1])]


@pytest.mark.parametrize("name,params", [c for _, c in KINKED], ids=[i for i, _ in KINKED])
def test_kink_conventions_equal_autograd(name, params):
    """At the kinks themselves the numeric σ, σ′, σ″ are autograd's (ReLU′(0) = 0, ELU″(0) = 0,
    Softplus″ = 0 at βz = threshold, …): reverse mode here; the generic path's forward mode agrees."""
    spec = reg.get(name)
    kinks = spec.kinks(**params)
    m = spec.make(**params)
    z = torch.tensor(kinks, dtype=torch.float64)
    got, ref = num_act.derivs(m, z), _autograd(m, z)
    for n in range(3):
        _close(got[n], ref[n], rtol=1e-12, atol=1e-15, what=(name, "kink", n))


# ---------------------------------------------------------------- (b) SymPy φ = torch forward
def _lamb(expr):
    f = sp.lambdify(Z, expr, modules=numeric_modules())
    return lambda z: torch.as_tensor(np.broadcast_to(np.asarray(f(z.numpy()), dtype=np.float64), z.shape).copy())


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_sympy_phi_and_derivatives_equal_numeric(name, params):
    spec = reg.get(name)
    m = spec.make(**params)
    q = spec.sympy_params(params)
    z = _points(spec, params)
    if name == "softplus":          # torch is linear above the threshold (checked below)
        z = z[params["beta"] * z <= params["threshold"]]
    phi = spec.phi(Z, **q)
    with torch.no_grad():
        _close(_lamb(phi)(z), m(z), rtol=1e-13, atol=1e-15, what=(name, "phi"))
    s = num_act.derivs(m, z)
    _close(_lamb(sp.diff(phi, Z))(z), s[1], rtol=1e-11, atol=1e-14, what=(name, "phi'"))
    _close(_lamb(sp.diff(phi, Z, 2))(z), s[2], rtol=1e-10, atol=1e-13, what=(name, "phi''"))
    # the symbolic engine's φ′, φ″ (written through a = φ(z)) are the same functions
    why = spec.sympy_refuses(**params) if spec.sympy_refuses is not None else None
    if why is not None:             # φ is not the module's function: the symbolic side refuses
        with pytest.raises(ValueError, match="threshold >= 20"):
            symbolic.get_activation((name, *params.values()))
        return
    act = symbolic.get_activation((name, *params.values()))
    a = sp.Symbol("a", real=True)
    for k, d in ((1, act.d1), (2, act.d2)):
        _close(_lamb(d(Z, a).subs(a, act.fn(Z)))(z), s[k], rtol=1e-10, atol=1e-13, what=(name, "d", k))
    assert type(act.torch_module()) is spec.module_types[0]
    assert spec.params_of(act.torch_module()) == params


def test_softplus_threshold_gap_is_bounded():
    """Above βz > threshold torch's Softplus returns z; the registry's φ = log(1 + e^{βz})/β differs by
    log(1 + e^{−βz})/β < e^{−threshold}/β (the bound stated in the derivation's LaTeX note)."""
    spec = reg.get("softplus")
    for beta, thr in ((1.0, 20.0), (1.7, 3.0)):
        m = spec.make(beta=beta, threshold=thr)
        z = torch.linspace(thr / beta + 1e-3, thr / beta + 5, 50, dtype=torch.float64)
        phi = _lamb(spec.phi(Z, **spec.sympy_params({"beta": beta, "threshold": thr})))(z)
        with torch.no_grad():
            gap = phi - m(z)
        assert bool((gap > 0).all()) and bool((gap < np.exp(-thr) / beta).all())


# ---------------------------------------------------------------- (c) piecewise-linear flag
@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_piecewise_linear_flag_matches_second_derivative(name, params):
    spec = reg.get(name)
    z = _points(spec, params)
    d2 = num_act.derivs(spec.make(**params), z)[2]
    sym_d2 = sp.diff(spec.phi(Z, **spec.sympy_params(params)), Z, 2)
    vals = _lamb(sym_d2)(z)
    if spec.piecewise_linear:
        assert bool((d2 == 0).all()) and bool((vals == 0).all())
        assert RULES[spec.module_types[0]].curvature(spec.make(**params), (None, d2), None) is None
    else:
        assert float(d2.abs().max()) > 1e-2 and float(vals.abs().max()) > 1e-2


def test_smooth_and_piecewise_linear_partition_the_registry():
    assert set(fst.SMOOTH) | set(fst.PIECEWISE_LINEAR) == set(reg.REGISTRY)
    assert not set(fst.SMOOTH) & set(fst.PIECEWISE_LINEAR)
    assert fst.PIECEWISE_LINEAR == reg.piecewise_linear_names()


# ---------------------------------------------------------------- (d) every side reaches every entry
@pytest.mark.parametrize("name", list(reg.REGISTRY))
def test_every_entry_is_reachable_everywhere(name):
    spec = reg.get(name)
    # hypothesis strategies: drawn by activations() and built by EXAMPLE_ACTIVATIONS
    assert find(fst.activations(), lambda n: n == name) == name
    built = fst.EXAMPLE_ACTIVATIONS[name]()
    assert type(built) is spec.module_types[0] and spec.params_of(built) == spec.params(**spec.example)
    arch = fst.Architecture(2, (3,), 1, (name,))
    assert type(fst.architecture_module(arch)[1]) is spec.module_types[0]
    # symbolic side: by name and every alias, and in a network
    act = symbolic.get_activation(name)
    assert act.name == name and act.piecewise_linear == spec.piecewise_linear and act.latex == spec.latex
    for alias in spec.aliases:
        assert symbolic.get_activation(alias.upper()).name == name
    assert sym_network.mlp([2, 2, 1], name).activations[0].name == name
    # numeric side: the fast path's derivs and the per-layer elementwise (or structural) rule
    for t in spec.all_types:
        assert t in num_act.SUPPORTED and t in RULES
        assert num_act.SUPPORTED[t] == (spec.numeric, spec.piecewise_linear)
        rule = RULES[t]
        if isinstance(rule, ew_layer.ElementwiseRule):
            assert rule.fn is spec.numeric and rule.piecewise_linear == spec.piecewise_linear
    # experiments
    assert type(exp_mlp.build_mlp(2, (3,), 2, name)[1]) is spec.module_types[0]
    assert reg.module_spec(spec.make()) == (name, spec.params())


def test_lookup_is_exact_and_dropout_counts_only_in_eval_mode():
    assert reg.lookup(nn.ReLU6()) is None                 # a subclass of Hardtanh: not silently accepted
    assert reg.module_spec(nn.Dropout(0.2)) is None       # training mode: not the identity
    assert reg.module_spec(nn.Dropout(0.2).eval()) == ("identity", {})
    assert reg.module_spec(nn.Linear(1, 1)) is None


def test_bad_activation_input_names_the_problem():
    with pytest.raises(ValueError, match="unknown activation 'mish'.*known: elu"):
        symbolic.get_activation("mish")
    with pytest.raises(ValueError, match="takes no parameter"):
        symbolic.get_activation("tanh:2")
    with pytest.raises(ValueError, match="min_val must be < max_val"):
        symbolic.get_activation("hardtanh:1,0")
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        reg.get("gelu").make(approximate="erf")
    with pytest.raises(ValueError, match="no parameter 'slope'.*negative_slope"):
        reg.get("leaky_relu").make(slope=0.1)
    assert symbolic.get_activation("softplus:beta=2,threshold=30").torch_module().threshold == 30.0
    assert symbolic.get_activation("gelu:tanh").torch_module().approximate == "tanh"


# ---------------------------------------------------------------- (e) one source for every side
def test_every_side_lists_the_same_activations():
    """A torch activation type known to the numeric side but not to the symbolic side (or the
    strategies, the per-layer rules, the experiments) fails here: all are derived from REGISTRY."""
    numeric_types = set(num_act.SUPPORTED)
    symbolic_types = {type(sym_act.ACTIVATIONS[n]().torch_module()) for n in sym_act.ACTIVATIONS}
    symbolic_types |= {t for n in sym_act.ACTIVATIONS for t in reg.REGISTRY[n].eval_types}
    strategy_types = {type(f()) for f in fst.EXAMPLE_ACTIVATIONS.values()}
    experiment_types = {type(exp_mlp.build_mlp(2, (3,), 2, n)[1]) for n in reg.REGISTRY}
    assert numeric_types == set(reg.TYPES) == symbolic_types
    assert strategy_types == experiment_types == {s.module_types[0] for s in reg.REGISTRY.values()}
    assert set(sym_act.ACTIVATIONS) == set(fst.EXAMPLE_ACTIVATIONS) == set(reg.REGISTRY)
    assert numeric_types <= set(RULES)


_READERS = [num_act, sym_act, ew_layer, fst, exp_mlp, sym_network]


@pytest.mark.parametrize("module", _READERS, ids=lambda m: m.__name__)
def test_readers_hold_no_activation_list_of_their_own(module):
    """The modules that read the registry name no activation type in code (comments aside):
    a second hard-coded list is how the lists drifted before."""
    names = {t.__name__ for s in reg.REGISTRY.values() for t in s.module_types}   # not Dropout (a layer too)
    tree = ast.parse(inspect.getsource(module))
    hits = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in names]
    assert not hits, f"{module.__name__} names {hits}; read them from fishersym.activations"


# ---------------------------------------------------------------- the symbolic engine end to end
#: every entry with every hyper-parameter at its non-default test value
ALT_CASES = [(n, s.params(**{h.name: ALT_SYM[h.name] for h in s.hyper})) for n, s in reg.REGISTRY.items()]


@pytest.mark.parametrize("name,params", ALT_CASES, ids=[c[0] for c in ALT_CASES])
def test_symbolic_derivation_equals_oracle(name, params):
    """The symbolic derivation of a 2-2-1 Bernoulli network with the activation (non-default
    hyper-parameters) equals the label-space oracle (reverse-mode autograd per label)."""
    fam = families.get("bernoulli")
    net = symbolic.mlp([2, 2, 1], (name, *params.values()))
    model = net.torch_module(seed=5)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.8 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(2, 2, generator=g, dtype=torch.float64)
    got = symbolic.derive(net, fam, n_samples=2).evaluate(model, x, optimised=False)
    for b in range(2):
        ref = brute_force(model, x[b:b + 1], fam, 2)
        # natural scales: max I for I, (max I)² for the variances (a V₂ that is exactly 0 has none)
        fmax = max(float(v.abs().max()) for v in ref.fisher.values())
        for key in ("fisher", "var1", "var2"):
            scale = fmax if key == "fisher" else fmax ** 2
            for n, v in getattr(ref, key).items():
                _close(got[key][n][b], v, rtol=1e-10, atol=1e-10 * scale, what=(name, key, n))
