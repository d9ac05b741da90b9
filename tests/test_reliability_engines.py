"""Reliability of the exact engines (issue 13 items 1, 7, 16, 17, 19): shared and tied modules,
hooks and parametrizations, unchanged user models, verified second derivatives on the generic
path, and stable activation derivatives.  References are independent of the engines: the
label-space oracle (reverse-over-reverse on θ, fishersym.testing.brute), plain
``torch.autograd.grad`` double backward, finite differences, and mpmath at 50 digits."""
from __future__ import annotations

import types
import warnings

import mpmath
import sympy
import re

import pytest
from hypothesis import given, settings, strategies as st
import torch
from torch import nn

from fishersym import families
from fishersym.numeric import conditional_stats
from fishersym.numeric.activations import SUPPORTED, derivs
from fishersym.numeric.mlp import plan_mlp

# ---------------------------------------------------------------- item 16: activations vs mpmath

mpmath.mp.dps = 50
_z = sympy.Symbol("z", real=True)
_K, _CG = sympy.sqrt(2 / sympy.pi), sympy.Rational(44715, 10 ** 6)
_SIG = 1 / (1 + sympy.exp(-_z))

#: (module, sympy expression of σ on the smooth piece: None where the piece is linear)
ACT_CASES = [
    (nn.Sigmoid(), _SIG),
    (nn.Tanh(), sympy.tanh(_z)),
    (nn.ReLU(), None),
    (nn.LeakyReLU(0.1), None),
    (nn.Hardtanh(-0.8, 0.9), None),
    (nn.ELU(alpha=1.3), sympy.Rational(13, 10) * (sympy.exp(_z) - 1)),
    (nn.Softplus(beta=1.5, threshold=20), sympy.log(1 + sympy.exp(sympy.Rational(3, 2) * _z)) / sympy.Rational(3, 2)),
    (nn.GELU(), _z * sympy.erfc(-_z / sympy.sqrt(2)) / 2),
    (nn.GELU(approximate="tanh"), _z * (1 + sympy.tanh(_K * (_z + _CG * _z ** 3))) / 2),
    (nn.SiLU(), _z * _SIG),
    (nn.Identity(), None),
    (nn.Dropout(0.3).eval(), None),
]
#: extreme and moderate pre-activations, away from kinks (0, Hardtanh's clips, Softplus' switch)
Z_GRID = [s * v for v in (0.3, 1.7, 4.2, 9.5, 15.5, 17.3, 19.3, 24.7, 33.1, 37.9, 41.9, 50.0) for s in (1, -1)]


def _linear_piece(m: nn.Module, z: float) -> float | None:
    """The slope when z lies on a linear piece of m (exact reference derivatives), else None."""
    if isinstance(m, (nn.Identity, nn.Dropout)):
        return 1.0
    if isinstance(m, nn.ReLU):
        return float(z > 0)
    if isinstance(m, nn.LeakyReLU):
        return 1.0 if z > 0 else m.negative_slope
    if isinstance(m, nn.Hardtanh):
        return float(m.min_val < z < m.max_val)
    if isinstance(m, nn.ELU) and z > 0:
        return 1.0
    if isinstance(m, nn.Softplus) and m.beta * z > m.threshold:
        return 1.0
    return None


def test_every_registered_activation_has_a_case():
    assert {type(m) for m, _ in ACT_CASES} == set(SUPPORTED)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", range(len(ACT_CASES)),
                         ids=[type(m).__name__ + str(i) for i, (m, _) in enumerate(ACT_CASES)])
def test_activation_derivatives_match_mpmath(case, dtype):
    """issue 13 item 16: σ, σ', σ'' to 16 ulps × (1 + the condition number |z f'(z)/f(z)|) of each,
    at |z| up to 50, against mpmath (the old forms σ(1 − σ), 1 − tanh², 1 + erf lose every digit of
    σ', σ'' at |z| ≳ 17 in float32 and ≳ 37 in float64).  Values below the smallest normal number
    are checked absolutely (16·tiny)."""
    m, f = ACT_CASES[case]
    z = torch.tensor(Z_GRID, dtype=dtype)
    got = derivs(m, z)
    eps, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).tiny
    exprs = None if f is None else [sympy.diff(f, _z, n) for n in range(4)]
    for zi, zt in enumerate(z.tolist()):
        zq = sympy.Rational(zt)                               # the exact float input
        slope = _linear_piece(m, zt)
        if slope is None:
            # evalf raises its working precision until 50 digits are correct (no cancellation loss)
            ref = [mpmath.mpf(str(e.subs(_z, zq).evalf(50, maxn=4000))) for e in exprs]
        else:
            ref = [mpmath.mpf(zt) * slope + (0 if m.__class__ is not nn.Hardtanh or slope else
                                              (m.min_val if zt < 0 else m.max_val)),
                   mpmath.mpf(slope), mpmath.mpf(0), mpmath.mpf(0)]
        zm = mpmath.mpf(zt)
        for n in range(3):
            r, g = ref[n], float(got[n][zi])
            cond = abs(zm * ref[n + 1] / r) if r != 0 else mpmath.mpf(0)
            tol = 16 * eps * (1 + float(cond)) * abs(float(r)) + 16 * tiny
            assert abs(g - float(r)) <= tol, (type(m).__name__, dtype, zt, n, g, float(r), float(cond))


# ---------------------------------------------------------------- shared helpers

FAM = families.get("categorical", C=3)


def _oracle(model: nn.Module, x: torch.Tensor, family=FAM):
    """Label-space oracle for the categorical family from the definitions (THEORY §2–§3), by plain
    ``torch.autograd`` on the user's model itself (no functional_call, which mis-handles a module
    that is both reused and tied): for each input and label y, the score s = ∂ log p_y/∂θ_i and
    H = −∂² log p_y/∂θ_i² (double backward), then I = E s², V₁ = Var s², V₂ = Var H (N = 1)."""
    assert family.name == "categorical"
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    sizes = [p.numel() for p in params]
    out = {k: {n: [] for n, _ in named} for k in ("fisher", "var1", "var2")}
    for b in range(x.shape[0]):
        lp = torch.log_softmax(family.link(model(x[b:b + 1]))[0], -1)
        prob = lp.detach().exp()
        S, H = [], []
        for c in range(lp.shape[0]):
            gs = torch.autograd.grad(lp[c], params, create_graph=True, allow_unused=True)
            g = torch.cat([(torch.zeros_like(p) if gi is None else gi).reshape(-1) for gi, p in zip(gs, params)])
            hd = torch.zeros_like(g)
            for i in range(g.numel()):
                if g[i].requires_grad:
                    hh = torch.autograd.grad(g[i], params, retain_graph=True, allow_unused=True)
                    flat = torch.cat([(torch.zeros_like(p) if t is None else t).reshape(-1)
                                      for t, p in zip(hh, params)])
                    hd[i] = -flat[i]
            S.append(g.detach())
            H.append(hd.detach())
        S, H = torch.stack(S), torch.stack(H)                      # (C, P)
        s2 = S * S
        fisher = prob @ s2
        var1 = prob @ (s2 - fisher) ** 2
        var2 = prob @ (H - prob @ H) ** 2
        for k, v in (("fisher", fisher), ("var1", var1), ("var2", var2)):
            for (n, p), chunk in zip(named, torch.split(v, sizes)):
                out[k][n].append(chunk.reshape(p.shape))
    return {k: {n: torch.stack(v) for n, v in d.items()} for k, d in out.items()}


def _assert_matches_oracle(res, ref, rtol=1e-9):
    # variances have the units of I²: values far below ε·I² are rounding noise of both routes
    # (e.g. V₂ ~ 1e-33 next to I ~ 1e-1 at a saturated ELU), so the scale has that floor
    fscale = max(float(v.abs().max()) for v in ref["fisher"].values())
    for k in ("fisher", "var1", "var2"):
        assert set(res[k]) == set(ref[k]), (k, set(res[k]), set(ref[k]))
        scale = max(float(v.abs().max()) for v in ref[k].values())
        if k != "fisher":
            scale = max(scale, 64 * torch.finfo(torch.float64).eps * fscale ** 2)
        for n in ref[k]:
            err = float((res[k][n] - ref[k][n]).abs().max())
            assert err <= rtol * scale, (k, n, err, scale)


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _snapshot(model):
    """Everything an analysis must leave alone: parameter objects and values, buffers, modes,
    plain tensor attributes, hooks, global RNG, default dtype and grad mode."""
    objs = [(n, p, type(p), p.requires_grad, p.detach().clone())
            for n, p in model.named_parameters(remove_duplicate=False)]
    bufs = [(n, b, b.clone()) for n, b in model.named_buffers(remove_duplicate=False)]
    attrs = [(m, k, v) for m in model.modules() for k, v in vars(m).items() if isinstance(v, torch.Tensor)]
    modes = [m.training for m in model.modules()]
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    return (objs, bufs, attrs, modes, hooks, torch.get_rng_state(), torch.get_default_dtype(),
            torch.is_grad_enabled())


def _assert_unchanged(model, snap):
    objs, bufs, attrs, modes, hooks, rng, dt, gm = snap
    now = list(model.named_parameters(remove_duplicate=False))
    assert [n for n, _ in now] == [o[0] for o in objs]
    for (n, p), (_, p0, t0, rg0, v0) in zip(now, objs):
        assert p is p0 and type(p) is t0 and p.requires_grad == rg0, n
        assert torch.equal(p.detach(), v0), n
    for (n, b), (_, b0, v0) in zip(model.named_buffers(remove_duplicate=False), bufs):
        assert b is b0 and torch.equal(b, v0), n
    for m, k, v in attrs:   # plain attributes (old weight_norm/prune's weight): same values
        assert torch.equal(vars(m).get(k).detach(), v.detach()), k
    assert [m.training for m in model.modules()] == modes
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()] == hooks
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.get_default_dtype() == dt and torch.is_grad_enabled() == gm


# ---------------------------------------------------------------- item 1: shared and tied modules

def _shared_act():
    torch.manual_seed(1)
    act = nn.Tanh()
    return nn.Sequential(nn.Linear(3, 4), act, nn.Linear(4, 4), act, nn.Linear(4, 3)).double()


def _shared_linear():
    torch.manual_seed(2)
    lin = nn.Linear(4, 4)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), lin, nn.Sigmoid(), lin, nn.Tanh(), nn.Linear(4, 3)).double()


def _tied():
    torch.manual_seed(3)
    l2, l3 = nn.Linear(4, 4), nn.Linear(4, 4)
    l3.weight = l2.weight
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), l2, nn.Sigmoid(), l3, nn.Tanh(), nn.Linear(4, 3)).double()


def _nested_shared():
    torch.manual_seed(4)
    act = nn.Sigmoid()
    inner = nn.Sequential(nn.Linear(4, 4), act)
    return nn.Sequential(nn.Linear(3, 4), act, inner, nn.Linear(4, 3)).double()


@pytest.mark.parametrize("make", [_shared_act, _nested_shared])
def test_shared_activation_every_path_matches_oracle(make):
    # issue 13 item 1: a shared activation instance is applied at each place forward calls it
    model = make()
    x = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = _oracle(model, x)
    for path in ("fast", "generic", "auto"):
        snap = _snapshot(model)
        res = conditional_stats(model, x, FAM, path=path)
        _assert_unchanged(model, snap)
        assert res.path == ("generic" if path == "generic" else "fast")
        _assert_matches_oracle(res, ref)


@pytest.mark.parametrize("make,why", [(_shared_linear, r"also used at '2\.weight' \(tied or shared parameters\)"),
                                      (_tied, r"also used at '2\.weight' \(tied or shared parameters\)")])
def test_shared_or_tied_linear_refused_by_fast_path(make, why):
    # issue 13 items 1 and 7: the fast path refuses, generic/auto match the oracle and leave the
    # user's Parameters in place (functional_call replaced them by detached tensors)
    model = make()
    x = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = _oracle(model, x)
    with pytest.raises(ValueError, match=why):
        conditional_stats(model, x, FAM, path="fast")
    for path in ("generic", "auto", "generic"):         # twice: a second analysis must still work
        snap = _snapshot(model)
        res = conditional_stats(model, x, FAM, path=path)
        _assert_unchanged(model, snap)
        assert res.path == "generic"
        if path == "auto":
            assert re.search(why, res.info["path_reason"])
        assert set(res["fisher"]) == _trainable(model)
        _assert_matches_oracle(res, ref)
    assert all(type(p) is nn.Parameter and p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------- item 19: what forward really does

class _MyLinear(nn.Linear):
    def forward(self, x):
        return super().forward(x) * 1.5


def _base(seed=5):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 3)).double()


def _with(kind):
    from torch.nn.utils import parametrizations, prune, weight_norm
    m = _base()
    if kind == "forward_hook":
        m[1].register_forward_hook(lambda mod, i, o: 2 * o)
    elif kind == "pre_hook":
        m[2].register_forward_pre_hook(lambda mod, i: (i[0] ** 2,))
    elif kind == "kwargs_hook":
        m[3].register_forward_hook(lambda mod, a, kw, o: o * o, with_kwargs=True)
    elif kind == "parametrize":
        parametrizations.weight_norm(m[2])
    elif kind == "old_weight_norm":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            weight_norm(m[0])
    elif kind == "prune":
        torch.manual_seed(0)
        prune.random_unstructured(m[2], "weight", 0.4)
    elif kind == "subclass":
        lin = _MyLinear(4, 4).double()
        m[2] = lin
    elif kind == "instance_forward":
        m[2].forward = types.MethodType(lambda self, x: nn.functional.linear(x, self.weight, self.bias).sin(), m[2])
    return m


KINDS = {"forward_hook": "forward hook", "pre_hook": "pre-hook", "kwargs_hook": "forward hook",
         "parametrize": "parametrized", "old_weight_norm": "pre-hook", "prune": "pre-hook",
         "subclass": "_MyLinear", "instance_forward": "forward replaced"}


@pytest.mark.parametrize("kind", list(KINDS))
def test_fast_path_only_for_provably_plain_models(kind):
    # issue 13 item 19: hooks, parametrizations, old weight_norm/prune, subclasses and replaced
    # forwards make the fast path fall back (reason in path_reason); every trainable parameter
    # (weight_orig, weight_g, weight_v, parametrizations.*.original*) is covered and exact
    model = _with(kind)
    x = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    plan, reason = plan_mlp(model, FAM)
    assert plan is None and KINDS[kind] in reason, reason
    with pytest.raises(ValueError, match="fast path cannot handle"):
        conditional_stats(model, x, FAM, path="fast")
    snap = _snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # reverse-mode recomputation notices
        res = conditional_stats(model, x, FAM)
    _assert_unchanged(model, snap)
    assert res.path == "generic" and KINDS[kind] in res.info["path_reason"]
    assert set(res["fisher"]) == _trainable(model)
    _assert_matches_oracle(res, _oracle(model, x))


def test_global_forward_hook_refuses_fast_path():
    # issue 13 item 19: a global module forward hook changes every module's output
    from torch.nn.modules.module import register_module_forward_hook
    model = _base()
    x = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    handle = register_module_forward_hook(lambda mod, i, o: o * 1.1 if isinstance(mod, nn.Tanh) else None)
    try:
        res = conditional_stats(model, x, FAM)
        assert res.path == "generic" and "global forward hook" in res.info["path_reason"]
        _assert_matches_oracle(res, _oracle(model, x))
    finally:
        handle.remove()
    assert conditional_stats(model, x, FAM).path == "fast"


def test_parametrized_weight_norm_generic_path_exact():
    # issue 13 item 19: parametrizations.weight_norm raised a raw NotImplementedError (no forward-mode
    # rule for _weight_norm_interface); now exact by reverse mode, with a warning saying so
    model = _with("parametrize")
    x = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with pytest.warns(RuntimeWarning, match="_weight_norm_interface"):
        res = conditional_stats(model, x, FAM, path="generic")
    assert any("original0" in n for n in res["fisher"])
    _assert_matches_oracle(res, _oracle(model, x))


# ---------------------------------------------------------------- item 17: verified second derivatives

class _LayerNormDirect(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2 = nn.Linear(3, 4), nn.Linear(4, 3)
        self.g = nn.Parameter(1 + 0.1 * torch.randn(4))

    def forward(self, x):
        return self.l2(torch.layer_norm(torch.tanh(self.l1(x)), (4,), self.g))


class _Instance(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.n, self.l2 = nn.Linear(3, 6), nn.InstanceNorm1d(2, affine=True), nn.Linear(6, 3)

    def forward(self, x):
        return self.l2(self.n(torch.tanh(self.l1(x)).reshape(-1, 2, 3)).reshape(-1, 6))


class _Group(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.n, self.l2 = nn.Linear(3, 6), nn.GroupNorm(2, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.l2(self.n(torch.tanh(self.l1(x))))


class _Solve(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2 = nn.Linear(3, 4), nn.Linear(4, 3)
        self.A = nn.Parameter(torch.eye(4) + 0.3 * torch.randn(4, 4))

    def forward(self, x):
        v = torch.tanh(self.l1(x))
        return self.l2(torch.linalg.solve(self.A.expand(x.shape[0], 4, 4), v.unsqueeze(-1)).squeeze(-1))


class _BadCube(torch.autograd.Function):
    """x³ with a correct (twice differentiable) backward but a forward-mode rule that uses a
    detached x: first derivatives right, nested forward-mode second derivative wrong (0 for 6x) —
    the class of torch bug that item 17 is about, independent of any particular op."""
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x ** 3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_forward(inputs[0].detach())
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return 3 * x * x * g

    @staticmethod
    def jvp(ctx, t):
        x, = ctx.saved_tensors
        return 3 * x * x * t


class _Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2 = nn.Linear(3, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.l2(_BadCube.apply(0.5 * torch.tanh(self.l1(x))))


def _reverse_reference(model, x, name, family=FAM):
    """u_i, w_i (B, P, C) by plain torch.autograd.grad double backward per input and output."""
    p = dict(model.named_parameters())[name]
    B, P = x.shape[0], p.numel()
    C = family.out_dim
    U = torch.zeros(B, P, C, dtype=p.dtype)
    W = torch.zeros_like(U)
    for b in range(B):
        h = family.link(model(x[b:b + 1]))[0]
        for c in range(C):
            g, = torch.autograd.grad(h[c], p, create_graph=True)
            g = g.reshape(-1)
            for i in range(P):
                U[b, i, c] = g[i].detach()
                if g.requires_grad:
                    gg = torch.autograd.grad(g[i], p, retain_graph=True, allow_unused=True)[0]
                    W[b, i, c] = 0 if gg is None else gg.reshape(-1)[i].detach()
    return U, W


def _finite_differences(model, x, name, idx, delta=1e-4, family=FAM):
    """(h(θ + δe_i) − h(θ − δe_i))/2δ and (h(θ + δe_i) − 2h(θ) + h(θ − δe_i))/δ², (B, K, C)."""
    p = dict(model.named_parameters())[name]
    U, W = [], []
    with torch.no_grad():
        h0 = family.link(model(x))
        for i in idx.tolist():
            e = torch.zeros(p.numel(), dtype=p.dtype)
            e[i] = delta
            p.add_(e.view_as(p))
            hp = family.link(model(x))
            p.sub_(2 * e.view_as(p))
            hm = family.link(model(x))
            p.add_(e.view_as(p))
            U.append((hp - hm) / (2 * delta))
            W.append((hp - 2 * h0 + hm) / delta ** 2)
    return torch.stack(U, 1), torch.stack(W, 1)


NORM_MODELS = [_LayerNormDirect, _Instance, _Group, _Solve, _Custom]


@pytest.mark.parametrize("make", NORM_MODELS, ids=lambda c: c.__name__)
def test_generic_w_matches_reverse_and_finite_differences(make):
    # issue 13 item 17: nested forward mode is wrong for torch.layer_norm called directly,
    # InstanceNorm1d and a custom op with a bad forward rule; every chunk is now verified by
    # reverse-over-reverse and wrong entries are recomputed
    from fishersym.numeric.generic import directions
    torch.manual_seed(7)
    model = make().double()
    x = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for name, p in model.named_parameters():
        idx = torch.arange(p.numel())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            U, W = directions(model, x, FAM, name, idx)
        Ur, Wr = _reverse_reference(model, x, name)
        scale_u, scale_w = float(Ur.abs().max()) + 1e-300, float(Wr.abs().max()) + 1e-300
        assert float((U - Ur).abs().max()) <= 1e-10 * scale_u, (name, "u vs reverse")
        assert float((W - Wr).abs().max()) <= 1e-10 * max(scale_w, 1e-6 * scale_u), (name, "w vs reverse")
        Uf, Wf = _finite_differences(model, x, name, idx)
        assert float((U - Uf).abs().max()) <= 1e-6 * scale_u, (name, "u vs finite differences")
        assert float((W - Wf).abs().max()) <= 1e-4 * max(scale_w, scale_u), (name, "w vs finite differences")


@pytest.mark.parametrize("make", [_LayerNormDirect, _Instance, _Group, _Custom], ids=lambda c: c.__name__)
def test_generic_var2_matches_oracle_with_wrong_forward_rules(make):
    # issue 13 item 17: V₂ (and I, V₁) of the generic path against the label-space oracle
    torch.manual_seed(8)
    model = make().double()
    x = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = conditional_stats(model, x, FAM, path="generic")
    _assert_matches_oracle(res, _oracle(model, x))


def test_wrong_forward_rule_is_reported():
    # issue 13 item 17: the recomputation is not silent: a RuntimeWarning names the parameter
    torch.manual_seed(9)
    model = _Custom().double()
    x = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with pytest.warns(RuntimeWarning, match="l1.weight.*reverse-over-reverse"):
        conditional_stats(model, x, FAM, path="generic")


# ---------------------------------------------------------------- items 1, 7, 19: generated class

_POOL = [nn.Tanh, nn.Sigmoid, nn.SiLU, nn.ELU, nn.Softplus]


@st.composite
def _shared_models(draw):
    """Sequential MLPs with shared activation instances, a Linear used twice, tied weights,
    nested Sequentials and hooks, each drawn at random (widths ≤ 4, so the oracle is cheap)."""
    torch.manual_seed(draw(st.integers(0, 2 ** 16)))
    w = draw(st.integers(1, 4))
    acts = [_POOL[i]() for i in draw(st.lists(st.integers(0, len(_POOL) - 1), min_size=1, max_size=3))]
    layers: list[nn.Module] = [nn.Linear(2, w)]
    linears = []
    for _ in range(draw(st.integers(1, 3))):
        layers.append(acts[draw(st.integers(0, len(acts) - 1))])          # shared instances
        kind = draw(st.sampled_from(["new", "new", "reuse", "tie"])) if linears else "new"
        if kind == "reuse":
            lin = linears[draw(st.integers(0, len(linears) - 1))]
        else:
            lin = nn.Linear(w, w, bias=draw(st.booleans()))
            if kind == "tie":
                lin.weight = linears[draw(st.integers(0, len(linears) - 1))].weight
        linears.append(lin)
        layers.append(lin)
    layers += [acts[0], nn.Linear(w, 3)]
    if draw(st.booleans()):
        k = draw(st.integers(1, len(layers) - 1))
        layers = layers[:k] + [nn.Sequential(*layers[k:])]                 # nested Sequential
    model = nn.Sequential(*layers).double()
    hooked = draw(st.booleans())
    if hooked:
        acts[0].register_forward_hook(lambda mod, i, o: 0.5 * o)
    return model


@settings(deadline=None)
@given(_shared_models(), st.sampled_from(["auto", "generic"]))
def test_generated_shared_tied_hooked_models(model, path):
    # issue 13 items 1, 7, 19: any path the planner takes equals the oracle; the model is unchanged
    x = torch.randn(2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    snap = _snapshot(model)
    res = conditional_stats(model, x, FAM, path=path)
    _assert_unchanged(model, snap)
    assert set(res["fisher"]) == _trainable(model)
    if res.path == "fast":
        ids = [id(m) for m in model.modules() if isinstance(m, nn.Linear)]
        assert plan_mlp(model, FAM)[0] is not None and len(ids) == len(set(ids))
    _assert_matches_oracle(res, _oracle(model, x))
