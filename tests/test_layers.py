"""Per-layer rules and the Sequential runner (issue 9 item 3; THEORY §7, §12) against autograd brute force.

Every check compares with an independent torch.func computation in float64:
* forward  vs  module(x);
* jac_t    vs  torch.func.vjp of the module, one row at a time (vmap over rows);
* param_u  vs  torch.func.jacrev of the per-input output w.r.t. each parameter;
* param_w  vs  the definition Σ_k R_k (F_k · ∂y/∂θ_i)² with ∂y/∂θ from jacrev;
* curvature vs σ'' from nested autograd;
* the runner's u and w  vs  per-input jacrev of h and the diagonal of torch.func.hessian of h,
  relative error ≤ 1e-10; proved zeros are checked to be zeros of the brute-force Hessian.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, hessian, jacrev, vjp, vmap

from fishersym.numeric.activations import SUPPORTED
from fishersym.numeric.layers import (RULES, Factored, LayerRule, ProvedZero, dense, layer_quantities,
                                      plan_sequential, register, rule_for)
from fishersym.numeric.layers.conv import ConvRule

TOL = 1e-10


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / (scale if scale > 0 else 1.0)


def close(a, b, tol=TOL):
    err = rel_err(a, b)
    assert err <= tol, f"relative error {err:.3e} > {tol:.1e}"


# ---------------------------------------------------------------- single-rule brute force

def brute_rule(module: nn.Module, x: torch.Tensor, K: int = 3, seed: int = 0) -> None:
    """Check every method of the module's rule against torch.func on batch x."""
    rule, why = rule_for(module)
    assert rule is not None, why
    gen = torch.Generator().manual_seed(seed)
    y, cache = rule.forward(module, x)
    close(y, module(x), 1e-13)
    B = x.shape[0]
    ysh, xsh = tuple(y.shape[1:]), tuple(x.shape[1:])
    # jac_t: rows M (B, K, *y) → (B, K, *x), against vjp of the module (per input, per row)
    M = torch.randn((B, K) + ysh, generator=gen)

    def one(xb, Mb):
        _, f = vjp(lambda t: module(t.unsqueeze(0))[0], xb)
        return vmap(lambda m: f(m)[0])(Mb)
    ref = torch.stack([one(x[b], M[b]) for b in range(B)])
    close(rule.jac_t(module, cache, M), ref)
    # param_u with G = M (K plays C), and param_w with rows F = M and residuals R (B, C, K)
    params = dict(module.named_parameters(recurse=False))
    C = 2
    R = torch.randn(B, C, K, generator=gen)
    if params:
        def yb(p, xb):
            return functional_call(module, p, (xb.unsqueeze(0),))[0]
        J = vmap(jacrev(yb), in_dims=(None, 0))(params, x)            # name → (B, *y, *θ)
        us = rule.param_u(module, cache, M)
        ws = rule.param_w(module, cache, M, R)
        assert set(us) == set(params) == set(ws)
        for n, p in params.items():
            Jn = J[n].reshape(B, -1, p.numel())
            rows = torch.einsum("bky,byi->bki", M.reshape(B, K, -1), Jn)
            close(dense(us[n]), rows.reshape((B, K) + tuple(p.shape)))
            w_ref = torch.einsum("bak,bki->bai", R, rows * rows).reshape((B, C) + tuple(p.shape))
            close(dense(ws[n]), w_ref)
    else:
        assert rule.param_u(module, cache, M) == {}
        assert rule.param_w(module, cache, M, R) == {}
    # curvature (units = inputs): G[b,a,j]·σ''(x_j) for elementwise layers, None for piecewise linear
    G = torch.randn((B, C) + ysh, generator=gen)
    Rl = rule.curvature(module, cache, G)
    if rule.piecewise_linear:
        assert Rl is None and rule.second_order_rows(module, cache, G) is None
    elif Rl is None:
        # a non-elementwise layer (LayerNorm): Σ_k R_k F_k F_kᵀ is the full Hessian of G_a·y in x, as matrices
        F, R2 = rule.second_order_rows(module, cache, G)
        Ff = F.reshape(B, F.shape[1], -1)
        for b in range(B):
            for a in range(C):
                H = hessian(lambda t, a=a, b=b: (G[b, a] * module(t.reshape((1,) + xsh))[0]).sum())(x[b].reshape(-1))
                close(torch.einsum("k,ki,kj->ij", R2[b, a], Ff[b], Ff[b]), H, 1e-10)
    else:
        assert ysh == xsh, "curvature is defined for elementwise layers here"

        def s(t):
            return module(t.reshape((1,) + xsh)).sum()
        d2 = torch.stack([vmap(lambda e, b=b: torch.func.jvp(torch.func.grad(s), (x[b].reshape(-1),), (e,))[1] @ e)(
            torch.eye(x[b].numel())) for b in range(B)]).reshape(x.shape)
        close(Rl, G * d2.unsqueeze(1), 1e-10)
        # and the residual is the full second derivative of G·y: its Hessian in x is diagonal
        Hs = hessian(lambda t: (G[0, 0] * module(t.reshape((1,) + xsh))[0]).sum())(x[0].reshape(-1))
        close(torch.diag(torch.diagonal(Hs)), Hs, 1e-13)


ACTS = [t() for t in SUPPORTED if t not in (nn.Identity, nn.Dropout)]
EXTRA = [nn.LeakyReLU(0.3), nn.Hardtanh(-0.5, 0.7), nn.ELU(0.6), nn.Softplus(2.0, 1.0),
         nn.GELU(approximate="tanh")]


@pytest.mark.parametrize("act", ACTS + EXTRA, ids=lambda m: repr(m))
def test_elementwise_rules(act):
    x = torch.randn(3, 2, 5)
    x[0, 0, 0] = 0.0                      # a kink point for the piecewise-linear ones (autograd's convention)
    brute_rule(act, x)
    assert RULES[type(act)].piecewise_linear == SUPPORTED[type(act)][1]


def test_every_registered_activation_has_a_rule():
    for t in SUPPORTED:
        assert t in RULES, t
    assert all(isinstance(r, LayerRule) and r.doc for r in RULES.values())


def _bn(cls, C, affine=True):
    m = cls(C, affine=affine)
    with torch.no_grad():
        m.running_mean.normal_()
        m.running_var.uniform_(0.5, 2.0)
        if affine:
            m.weight.normal_()
            m.bias.normal_()
    return m.eval()


def _ln(shape, bias=True):
    m = nn.LayerNorm(shape, bias=bias)
    with torch.no_grad():
        m.weight.normal_()
        if bias:
            m.bias.normal_()
    return m


STRUCT = [
    (lambda: nn.Linear(4, 3), (3, 4)),
    (lambda: nn.Linear(4, 3, bias=False), (3, 4)),
    (lambda: nn.Linear(4, 3), (2, 5, 4)),               # middle dimension: dense u, w
    (lambda: nn.Flatten(), (2, 3, 2, 2)),
    (lambda: nn.Flatten(2), (2, 3, 2, 2)),
    (lambda: nn.Identity(), (2, 3)),
    (lambda: nn.Dropout(0.5).eval(), (2, 3)),
    (lambda: nn.Dropout2d(0.5).eval(), (2, 3, 2, 2)),
    (lambda: nn.MaxPool2d(2), (2, 3, 4, 5)),
    (lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 2, 5, 6)),
    (lambda: nn.MaxPool2d(2, stride=1, dilation=2), (2, 2, 5, 5)),
    (lambda: nn.MaxPool1d(2), (2, 3, 7)),
    (lambda: nn.AvgPool2d(2), (2, 3, 4, 5)),
    (lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (2, 2, 5, 6)),
    (lambda: nn.AvgPool1d(3, stride=2), (2, 3, 7)),
    (lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 3, 5, 7)),
    (lambda: nn.AdaptiveAvgPool1d(1), (2, 3, 7)),
    (lambda: _bn(nn.BatchNorm1d, 3), (4, 3)),
    (lambda: _bn(nn.BatchNorm1d, 3), (4, 3, 5)),
    (lambda: _bn(nn.BatchNorm2d, 3), (2, 3, 2, 3)),
    (lambda: _bn(nn.BatchNorm2d, 3, affine=False), (2, 3, 2, 3)),
    (lambda: _ln(5), (3, 5)),
    (lambda: _ln(4), (2, 3, 4)),                        # positions: block-diagonal rows
    (lambda: _ln((2, 3)), (2, 2, 2, 3)),                # normalised over two dimensions
    (lambda: nn.LayerNorm(4, elementwise_affine=False), (2, 3, 4)),
    (lambda: _ln(4, bias=False), (3, 4)),
]


@pytest.mark.parametrize("make,shape", STRUCT, ids=[f"{i}" for i in range(len(STRUCT))])
def test_structural_rules(make, shape):
    torch.manual_seed(1)
    brute_rule(make(), torch.randn(shape))


def test_maxpool_ties_follow_autograd():
    # equal entries in a window: the scatter uses torch's own argmax, as autograd does
    x = torch.zeros(2, 1, 4, 4)
    x[1] = torch.arange(16.0).reshape(4, 4) % 3
    brute_rule(nn.MaxPool2d(2), x)


@st.composite
def conv_cases(draw):
    dim = draw(st.sampled_from([1, 2]))
    g = draw(st.integers(1, 3))
    cin, cout = g * draw(st.integers(1, 2)), g * draw(st.integers(1, 2))
    k = tuple(draw(st.integers(1, 3)) for _ in range(dim))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(dim))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(dim))
    pad = draw(st.sampled_from(["int", "valid", "same"] if all(s == 1 for s in stride) else ["int", "valid"]))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(dim)) if pad == "int" else pad
    p = padding if pad == "int" else (0,) * dim
    size = tuple(max(1, d * (kk - 1) + 1 - 2 * pp + draw(st.integers(0, 3))) for d, kk, pp in zip(dil, k, p))
    bias = draw(st.booleans())
    cls = nn.Conv1d if dim == 1 else nn.Conv2d
    return cls(cin, cout, k, stride=stride, padding=padding, dilation=dil, groups=g, bias=bias), (2, cin) + size


@given(conv_cases(), st.integers(0, 2**16))
def test_conv_rule(case, seed):
    conv, shape = case
    torch.manual_seed(seed)
    x = torch.randn(shape)
    brute_rule(conv, x, K=2, seed=seed)
    check_units_shortcut(conv, x)


def check_units_shortcut(module, x):
    """param_w_units(R) (rows = identity on the outputs, not formed) equals param_w with explicit rows."""
    rule = RULES[type(module)]
    y, cache = rule.forward(module, x)
    n = y[0].numel()
    ysh = tuple(y.shape[1:])
    R = torch.randn((x.shape[0], 2) + ysh)
    fast = rule.param_w_units(module, cache, R)
    eye = torch.eye(n).reshape((1, n) + ysh).expand((x.shape[0], n) + ysh)
    slow = rule.param_w(module, cache, eye, R.reshape(x.shape[0], 2, n))
    assert set(fast) == set(slow)
    for k in fast:
        close(dense(fast[k]), dense(slow[k]))


def test_linear_units_shortcut():
    check_units_shortcut(nn.Linear(4, 3), torch.randn(3, 4))
    assert RULES[nn.Linear].param_w_units(nn.Linear(4, 3), torch.randn(2, 5, 4), torch.randn(2, 2, 5, 3)) is None


def test_conv_refuses_other_padding_modes():
    rule, why = rule_for(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"))
    assert rule is None and "padding_mode='reflect'" in why


# ---------------------------------------------------------------- refusals and registry

def test_refusals():
    assert rule_for(nn.BatchNorm2d(3))[0] is None and "training mode" in rule_for(nn.BatchNorm2d(3))[1]
    bn = nn.BatchNorm1d(3, track_running_stats=False).eval()
    assert rule_for(bn)[0] is None and "track_running_stats" in rule_for(bn)[1]
    assert rule_for(nn.Dropout(0.2))[0] is None and "model.eval()" in rule_for(nn.Dropout(0.2))[1]
    assert rule_for(nn.Dropout(0.0))[0] is not None                  # p = 0 is the identity even in training
    assert rule_for(nn.Flatten(0))[0] is None
    assert rule_for(nn.MaxPool2d(2, return_indices=True))[0] is None
    rule, why = rule_for(nn.LSTM(2, 2))
    assert rule is None and "LSTM has no per-layer rule" in why

    class MyLinear(nn.Linear):                                       # a subclass may change forward
        pass
    assert rule_for(MyLinear(2, 2))[0] is None
    with pytest.raises(ValueError, match="already has the rule"):
        register(ConvRule(), (nn.Linear,))
    assert type(RULES[nn.Linear]).__name__ == "LinearRule"


def test_runner_refusals():
    lin = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="tied or shared"):
        layer_quantities(nn.Sequential(lin, nn.Tanh(), lin), torch.randn(2, 3))
    tied = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Tanh(), nn.Linear(3, 3, bias=False))
    tied[2].weight = tied[0].weight
    with pytest.raises(ValueError, match="tied or shared"):
        layer_quantities(tied, torch.randn(2, 3))
    with pytest.raises(ValueError, match="LSTM"):
        layer_quantities(nn.Sequential(nn.LSTM(2, 2)), torch.randn(2, 2))
    with pytest.raises(ValueError, match="training mode"):
        layer_quantities(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), torch.randn(2, 3))
    with pytest.raises(ValueError, match="not an nn.Sequential"):
        layer_quantities(nn.Linear(3, 2), torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"shape \(batch, C\)"):
        layer_quantities(nn.Sequential(nn.Conv1d(1, 2, 2), nn.Tanh()), torch.randn(2, 1, 5))
    big = nn.Sequential(nn.Linear(50, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(), nn.Linear(200, 3))
    with pytest.raises(ValueError, match=r"GiB .*max_bytes.*options"):
        layer_quantities(big, torch.randn(64, 50), max_bytes=10**6)
    h, q = layer_quantities(big, torch.randn(64, 50), max_bytes=10**6, second_order=False)
    assert q["0.weight"].w is None and isinstance(q["4.weight"].w, ProvedZero)


# ---------------------------------------------------------------- runner vs brute force

def brute_model(model: nn.Module, x: torch.Tensor):
    """Per input: u = jacrev of h, w = diagonal of torch.func.hessian of h, per parameter tensor."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def h1(p, xb):
        return functional_call(model, p, (xb.unsqueeze(0),))[0]
    u = vmap(jacrev(h1), in_dims=(None, 0))(params, x)
    w = {}
    for n, p in params.items():
        def hn(t, xb, n=n, p=p):
            return h1({**params, n: t.reshape(p.shape)}, xb)
        H = vmap(hessian(hn), in_dims=(None, 0))(p.reshape(-1), x)   # (B, C, P, P)
        w[n] = torch.diagonal(H, dim1=-2, dim2=-1).reshape(H.shape[:2] + p.shape)
    return model(x), u, w


def check_model(model: nn.Module, x: torch.Tensor) -> dict:
    model.eval()
    h, q = layer_quantities(model, x)
    return check_against_brute(model, x, h, q)


def check_against_brute(model: nn.Module, x: torch.Tensor, h: torch.Tensor, q: dict) -> dict:
    """h, u and w of a runner against per-input jacrev / Hessian diagonals (:func:`brute_model`);
    every w proved zero is exactly zero in the brute force."""
    h_ref, u_ref, w_ref = brute_model(model, x)
    close(h, h_ref, 1e-13)
    assert set(q) == set(u_ref)
    for n in q:
        close(dense(q[n].u), u_ref[n])
        if isinstance(q[n].w, ProvedZero):
            assert w_ref[n].abs().max().item() == 0.0, n                 # the proof holds for the brute force
        close(dense(q[n].w), w_ref[n])
    return q


def cnn(act=nn.Tanh, out_act=nn.Sigmoid):
    return nn.Sequential(nn.Conv2d(2, 3, 3), act(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(27, 5),
                         out_act(), nn.Linear(5, 3))


def test_runner_cnn_tanh_sigmoid():
    torch.manual_seed(0)
    q = check_model(cnn(), torch.randn(3, 2, 8, 8))
    assert isinstance(q["4.weight"].w, Factored) and isinstance(q["4.weight"].u, Factored)
    assert isinstance(q["6.weight"].w, ProvedZero) and isinstance(q["6.bias"].w, ProvedZero)
    assert not isinstance(q["0.weight"].w, ProvedZero)
    assert dense(q["0.weight"].w).abs().max() > 0


def test_runner_relu_cnn_proved_zero():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 3, 2, stride=2),
                          nn.LeakyReLU(0.1), nn.AvgPool2d(1), nn.Flatten(), nn.Linear(18, 6), nn.ReLU(),
                          nn.Linear(6, 3))
    q = check_model(model, torch.randn(3, 2, 8, 12))
    for n, v in q.items():
        assert isinstance(v.w, ProvedZero), n
    r = q["0.weight"].w.reason
    assert "Conv2d" in r and "ReLU" in r and "MaxPool2d" in r and "Linear" in r and "Tanh" not in r


def test_runner_mutation_flips_verdict():
    """issue 9 (correctness): a tanh in place of one ReLU flips the proved-zero verdict for every parameter
    below it and for none above it."""
    torch.manual_seed(2)
    layers = [nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 4),
              nn.ReLU(), nn.Linear(4, 2)]
    base = nn.Sequential(*layers)
    x = torch.randn(2, 1, 6, 6)
    q0 = check_model(base, x)
    assert all(isinstance(v.w, ProvedZero) for v in q0.values())
    mutated = nn.Sequential(*layers[:3], nn.Tanh(), *layers[4:])
    q1 = check_model(mutated, x)
    for n, v in q1.items():
        below = int(n.split(".")[0]) < 3
        assert isinstance(v.w, ProvedZero) is not below, n
        if below:
            assert dense(v.w).abs().max() > 0, n


def test_runner_shared_activation_instance():
    torch.manual_seed(3)
    act = nn.Tanh()
    model = nn.Sequential(nn.Linear(4, 5), act, nn.Linear(5, 4), act, nn.Linear(4, 3))
    assert len(plan_sequential(model)[0].modules) == 5
    q = check_model(model, torch.randn(4, 4))
    assert set(q) == {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}


def test_runner_mlp_nested_and_all_smooth_activations():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.GELU(), nn.Linear(4, 4), nn.SiLU()),
                          nn.Linear(4, 4), nn.ELU(), nn.Softplus(), nn.Linear(4, 2))
    x = torch.randn(5, 3)
    x[0] = 0.0
    check_model(model, x)


def test_runner_conv1d_batchnorm_avgpool():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv1d(2, 4, 3, padding="same", groups=2), _bn(nn.BatchNorm1d, 4), nn.Softplus(),
                          nn.AvgPool1d(2), nn.Conv1d(4, 3, 2, dilation=2, stride=2), nn.Sigmoid(),
                          nn.AdaptiveAvgPool1d(2), nn.Flatten(), nn.Dropout(0.3), nn.Linear(6, 3))
    check_model(model, torch.randn(3, 2, 11))


def test_runner_second_order_only_above():
    """Smooth layer at the very top (h = tanh(...)): every parameter is below it, none is proved zero;
    a smooth layer at the very bottom (before any parameter) changes nothing."""
    torch.manual_seed(6)
    q = check_model(nn.Sequential(nn.Tanh(), nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Tanh()),
                    torch.randn(3, 3))
    assert not any(isinstance(v.w, ProvedZero) for v in q.values())
    q = check_model(nn.Sequential(nn.Tanh(), nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), torch.randn(3, 3))
    assert all(isinstance(v.w, ProvedZero) for v in q.values())


@settings(max_examples=12)
@given(conv_cases(), st.sampled_from([nn.Tanh, nn.ReLU, nn.Sigmoid]), st.integers(0, 2**16))
def test_runner_random_conv_nets(case, act, seed):
    conv, shape = case
    torch.manual_seed(seed)
    y = conv(torch.zeros(shape))
    model = nn.Sequential(conv, act(), nn.Flatten(), nn.Linear(y[0].numel(), 3), nn.Tanh(), nn.Linear(3, 2))
    check_model(model, torch.randn(shape))


class Square(nn.Module):
    def forward(self, x):
        return x * x


class Scale(nn.Module):
    """y = s·x with a parameter s: the protocol's defaults make the runner refuse or prove nothing."""

    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.tensor(1.3))

    def forward(self, x):
        return self.s * x


def test_protocol_extension_and_conservative_defaults():
    """A rule written outside the package (y = x², σ'' = 2) plugs into the runner and gives the exact w;
    a rule that claims nothing is neither piecewise linear nor linear in its parameters."""
    class SquareRule(LayerRule):
        types = (Square,)
        doc = "y = x² elementwise"

        def forward(self, module, x):
            return x * x, x

        def jac_t(self, module, x, M):
            return M * (2 * x).unsqueeze(1)

        def curvature(self, module, x, G):
            return 2 * G

    class ScaleRule(LayerRule):
        types = (Scale,)
        doc = "y = s·x"

        def forward(self, module, x):
            return module.s * x, x

        def jac_t(self, module, x, M):
            return M * module.s

    try:
        assert not SquareRule.piecewise_linear and not SquareRule.jacobian_constant
        torch.manual_seed(7)
        q = check_model(nn.Sequential(nn.Linear(3, 4), Square(), nn.Linear(4, 2)), torch.randn(3, 3))
        assert not isinstance(q["0.weight"].w, ProvedZero) and isinstance(q["2.weight"].w, ProvedZero)
        with pytest.raises(ValueError, match="not linear in its parameters"):
            layer_quantities(nn.Sequential(nn.Linear(3, 2), Scale()), torch.randn(2, 3))
    finally:
        RULES.pop(Square, None)
        RULES.pop(Scale, None)


def test_runner_without_parameters():
    x = torch.randn(3, 2, 4, 4)
    h, q = layer_quantities(nn.Sequential(nn.Tanh(), nn.AvgPool2d(2), nn.Flatten()), x)
    assert q == {}
    close(h, nn.AvgPool2d(2)(torch.tanh(x)).flatten(1), 1e-15)
