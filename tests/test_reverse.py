"""Reverse-mode exact path, V₂ ≡ 0 proofs and math attention (issue 9 items 1, 2a, 4).

Every quantity is checked against an independent computation: the generic forward-over-forward
engine (verified there against reverse-over-reverse), brute-force per-sample ``torch.func``
Jacobians and Hessian diagonals.  float64 (tests/conftest.py).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev, vmap

from fishersym import families
from fishersym.numeric.attention import math_attention
from fishersym.numeric.core import base_quantities
from fishersym.numeric.generic import generic_engine
from fishersym.numeric.guard import MemoryBudgetError
from fishersym.numeric.proofs import prove_w_zero
from fishersym.numeric.reverse import per_sample_jacobians, reverse_engine

RTOL = 1e-10


class Residual(nn.Module):
    def __init__(self, d=5, C=2):
        super().__init__()
        self.inp = nn.Linear(4, d)
        self.block = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
        self.out = nn.Linear(d, C)

    def forward(self, x):
        z = torch.relu(self.inp(x))
        z = torch.relu(z + self.block(z))
        return self.out(z)


class ConvResNet(nn.Module):
    """A ResNet basic block: conv-BN-ReLU-conv-BN, plus the identity, ReLU; pooled; linear head."""

    def __init__(self, ch=3, C=3):
        super().__init__()
        self.stem = nn.Conv2d(1, ch, 3, padding=1, bias=False)
        self.c1, self.b1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch)
        self.c2, self.b2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch)
        self.head = nn.Linear(ch, C)
        with torch.no_grad():
            for bn in (self.b1, self.b2):
                bn.running_mean.normal_()
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_()

    def forward(self, x):
        z = torch.relu(self.stem(x))
        out = self.b2(self.c2(torch.relu(self.b1(self.c1(z)))))
        z = torch.relu(out + z)
        return self.head(nn.functional.adaptive_avg_pool2d(z, 1).flatten(1))


class TwiceUsed(nn.Module):
    """One Linear applied twice with a ReLU between (tied weights): h = W relu(W x + b) + b."""

    def __init__(self, d=3):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, x):
        return self.lin(torch.relu(self.lin(x)))


def relu_cnn(act=nn.ReLU):
    m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(3, 4, 3), act(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                      nn.Linear(4, 3))
    with torch.no_grad():
        m[1].running_mean.normal_()
        m[1].running_var.uniform_(0.5, 2.0)
    return m.eval()


def _cases():
    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.LeakyReLU(0.1), nn.Linear(6 - 1, 3))
    cnn = relu_cnn()
    cnn1 = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(18, 1)).eval()
    return [("mlp", mlp, torch.randn(4, 4), families.get("categorical", C=3)),
            ("cnn", cnn, torch.randn(3, 1, 8, 8), families.get("categorical", C=3)),
            ("cnn_bern", cnn1, torch.randn(3, 1, 8, 8), families.get("bernoulli")),
            ("residual", Residual(), torch.randn(4, 4), families.get("gaussian", C=2)),
            ("resnet_block", ConvResNet().eval(), torch.randn(2, 1, 6, 6), families.get("categorical", C=3))]


def _compare(a_out, b_out, params, keys=None):
    for name in params:
        for key, part in b_out.parts[name].items():
            if keys is not None and key not in keys:
                continue
            a, b = a_out.parts[name][key].materialize(), part.materialize()
            assert a.shape == b.shape, (name, key)
            scale = b.abs().max()
            if key in ("nv2", "w2", "w2s") and scale == 0:
                assert (a == 0).all(), (name, key)
                continue
            ref = a_out.parts[name]["fisher"].materialize().abs().max() if key == "nv1_err" else scale
            assert (a - b).abs().max() <= RTOL * ref, (name, key, float((a - b).abs().max() / ref))


# issue 9 item 1: I, V₁, ‖u‖² (and V₂ = 0 where proved) equal the generic engine's
@pytest.mark.parametrize("case", range(5))
def test_matches_generic(case):
    label, model, x, fam = _cases()[case]
    params = dict(model.named_parameters())
    rev = reverse_engine(model, x, fam, params, progress=False, pneg_samples=1 if fam.discrete else None)
    gen = generic_engine(model, x, fam, params, pneg_samples=1 if fam.discrete else None)
    assert rev.path == "reverse"
    assert set(rev.parts) == set(gen.parts)
    assert set(rev.info["var2_zero_reason"]) == set(params)       # piecewise-linear nets: all proved
    _compare(rev, gen, params)
    torch.testing.assert_close(rev.h, gen.h, rtol=1e-12, atol=0)
    if fam.discrete:
        for k in params:
            assert (rev.pneg[k].materialize() == gen.pneg[k].materialize()).all()


def _tanh_cnn():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3)).eval()
    return model, torch.randn(2, 1, 6, 6), families.get("categorical", C=3)


class NormResidual(nn.Module):
    """LayerNorm (smooth in its input; torch's nested forward rule for it is wrong, safe_ad) + residual."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        z = self.inp(x)
        return self.out(torch.relu(self.norm(z)) + z)


# issue 9 item 2: exact w where V₂ ≡ 0 is not proved (tanh CNN), by both routes, and grams
@pytest.mark.parametrize("method", ["forward", "forward-over-reverse"])
def test_exact_w_layernorm(method):
    torch.manual_seed(10)
    model, x, fam = NormResidual(), torch.randn(3, 3), families.get("categorical", C=3)
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.normal_()
    params = dict(model.named_parameters())
    rev = reverse_engine(model, x, fam, params, w_mode="exact", w_method=method, progress=False)
    assert sorted(rev.info["w_exact"]) == ["inp.bias", "inp.weight"]
    assert "native_layer_norm" in rev.info["proofs"]["inp.weight"][1]
    gen = generic_engine(model, x, fam, params)
    assert float(gen.parts["inp.weight"]["nv2"].materialize().abs().max()) > 1e-6
    _compare(rev, gen, params)


@pytest.mark.parametrize("method", ["forward", "forward-over-reverse"])
def test_exact_w_matches_generic(method):
    model, x, fam = _tanh_cnn()
    params = dict(model.named_parameters())
    rev = reverse_engine(model, x, fam, params, w_mode="exact", w_method=method, grams=True, progress=False,
                         pneg_samples=2)
    gen = generic_engine(model, x, fam, params, grams=True, pneg_samples=2)
    assert sorted(rev.info["w_exact"]) == ["0.bias", "0.weight"]
    assert set(rev.info["var2_zero_reason"]) == {"4.weight", "4.bias"}
    assert float(gen.parts["0.weight"]["nv2"].materialize().abs().max()) > 1e-6   # not trivially zero
    _compare(rev, gen, params)
    for k in params:
        torch.testing.assert_close(rev.pneg[k].materialize(), gen.pneg[k].materialize(), rtol=0, atol=1e-12)
        for g in ("JJ", "UU", "WW"):
            torch.testing.assert_close(rev.grams[k][g], gen.grams[k][g], rtol=RTOL, atol=RTOL)
    with pytest.raises(ValueError, match=r"aten\.tanh.*w_mode='exact'"):
        reverse_engine(model, x, fam, params, progress=False)


# issue 9 item 2: exact w on a random sample of entries; NaN (never an unmarked estimate) elsewhere
def test_sampled_w():
    model, x, fam = _tanh_cnn()
    params = dict(model.named_parameters())
    gen = generic_engine(model, x, fam, params)
    g = torch.Generator().manual_seed(11)
    state = torch.random.get_rng_state()
    rev = reverse_engine(model, x, fam, params, w_mode="sample", w_sample=5, generator=g, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)                  # global RNG untouched
    smp = rev.info["w_sample"]
    assert set(smp) == {"0.weight", "0.bias"} and len(smp["0.weight"]["index"]) == 5
    assert len(smp["0.bias"]["index"]) == 2                                  # capped at the tensor's size
    for k, d in smp.items():
        idx = d["index"]
        for key in ("nv2", "w2", "w2s"):
            a = rev.parts[k][key].materialize().reshape(2, -1)
            b = gen.parts[k][key].materialize().reshape(2, -1)
            mask = torch.zeros(a.shape[1], dtype=torch.bool)
            mask[idx] = True
            assert torch.isnan(a[:, ~mask]).all()
            assert ((a[:, mask] - b[:, mask]).abs() <= RTOL * b.abs().max()).all()
            est = d["estimates"][key]
            torch.testing.assert_close(est["mean"], b[:, idx].mean(1), rtol=1e-12, atol=0)
            if len(idx) == b.shape[1]:                                       # the whole tensor: exact, no error
                torch.testing.assert_close(est["sum"], b.sum(1), rtol=1e-12, atol=0)
                assert (est["stderr"] == 0).all()
    _compare(rev, gen, params, keys={"fisher", "nv1", "u2", "u2s"})
    for bad, err in (({"w_sample": None}, ValueError), ({"w_sample": 1}, ValueError),
                     ({"w_sample": 1.5}, ValueError), ({"w_sample": "5"}, TypeError)):
        with pytest.raises(err, match="w_sample"):
            reverse_engine(model, x, fam, params, w_mode="sample", progress=False, **bad)
    with pytest.raises(ValueError, match="grams"):
        reverse_engine(model, x, fam, params, w_mode="sample", w_sample=3, grams=True, progress=False)


# issue 9 item 2: the standard error of the sampled mean is the exact SRSWOR formula.  Monte Carlo over
# 20000 samples: E[s²] = S² and Var(ȳ) = (1 − n/N)·S²/n, each checked within 6 Monte Carlo standard
# errors (false alarm < 1e-8 per check under the CLT for the averages)
def test_sample_estimate_srswor():
    from fishersym.numeric.reverse import _sample_estimate
    g = torch.Generator().manual_seed(12)
    N, n, R = 40, 7, 20000
    pop = torch.rand(N, generator=g) ** 3
    idx = torch.argsort(torch.rand(R, N, generator=g), 1)[:, :n]
    est = _sample_estimate(pop[idx], N)
    S2 = pop.var(unbiased=True)
    var_mean = (1 - n / N) * S2 / n
    ybar = est["mean"]
    se2 = est["stderr"] ** 2
    assert abs(float(ybar.mean() - pop.mean())) <= 6 * float(ybar.std()) / R ** 0.5
    assert abs(float(se2.mean() - var_mean)) <= 6 * float(se2.std()) / R ** 0.5
    dev2 = (ybar - pop.mean()) ** 2
    assert abs(float(dev2.mean() - var_mean)) <= 6 * float(dev2.std()) / R ** 0.5


# issue 9 item 1: chunking over inputs and parameter groups changes nothing; the refusal states the size
def test_chunks_and_memory_refusal():
    label, model, x, fam = _cases()[1]
    params = dict(model.named_parameters())
    full = reverse_engine(model, x, fam, params, progress=False)
    small = reverse_engine(model, x, fam, params, progress=False, max_bytes=60_000)
    assert small.info["chunk_inputs"] < x.shape[0] or len(small.info["groups"]) > 1
    for k in params:
        for key, part in full.parts[k].items():
            torch.testing.assert_close(small.parts[k][key].materialize(), part.materialize(), rtol=1e-13, atol=0)
    with pytest.raises(MemoryBudgetError, match=r"MiB for one input.*float32"):
        reverse_engine(model, x, fam, params, progress=False, max_bytes=1000)
    with pytest.raises(ValueError, match="w_mode"):
        reverse_engine(model, x, fam, params, progress=False, w_mode="sampled")


# issue 9 item 1: the user's module is never written to (a Linear used twice = tied weights)
def test_no_mutation_tied_weights():
    torch.manual_seed(3)
    model = TwiceUsed()
    before = {k: (v, v.detach().clone()) for k, v in model.named_parameters()}
    x = torch.randn(3, 3)
    fam = families.get("gaussian", C=3)
    params = dict(model.named_parameters())
    rev = reverse_engine(model, x, fam, params, w_mode="exact", progress=False)
    for k, v in model.named_parameters():
        assert v is before[k][0] and torch.equal(v, before[k][1]) and v.grad is None
    assert isinstance(model.lin.weight, nn.Parameter)
    gen = generic_engine(model, x, fam, params)
    _compare(rev, gen, params)


class DataDependent(nn.Module):
    """Python control flow on a value: no vmap; the engine falls back to an autograd loop."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        y = self.lin(x)
        return torch.relu(y) if float(y.detach().sum()) > 0 else y


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2


class NoDerivative(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return _NoBackward.apply(self.lin(x))


# issue 9 item 1: a model vmap cannot run gives the same values by the autograd loop, and says so;
# a model autograd cannot differentiate gets an error naming the problem
def test_fallback_route_and_error():
    torch.manual_seed(8)
    model, x, fam = DataDependent(), torch.randn(5, 3), families.get("categorical", C=2)
    params = dict(model.named_parameters())
    rev = reverse_engine(model, x, fam, params, progress=True, max_bytes=3000)
    assert rev.info["chunk_inputs"] < 5
    assert rev.info["jacobian_route"] and rev.info["jacobian_route"][0].startswith("autograd loop")
    _compare(rev, generic_engine(model, x, fam, params), params)
    bad = NoDerivative()
    with pytest.raises(RuntimeError, match="cannot differentiate this model by reverse mode"):
        reverse_engine(bad, x, fam, dict(bad.named_parameters()), progress=False)


def _hdiag(model, x1, name, link=lambda o: o):
    """Brute force w = diag of ∂²h_c/∂θ² for every output c, flat (C, P)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    p0 = params[name]

    def h(t):
        return link(functional_call(model, {**params, name: t.reshape(p0.shape)}, (x1[None],)))[0]
    H = hessian(h)(p0.reshape(-1))                                              # (C, P, P)
    return torch.diagonal(H, dim1=1, dim2=2)


# issue 9 item 2a: verdicts of the proof, with brute-force w where it matters
def test_proofs_relu_cnn_and_mutation():
    torch.manual_seed(4)
    relu = relu_cnn()
    x = torch.randn(2, 1, 8, 8)
    ps = {k: v.detach() for k, v in relu.named_parameters()}
    pr = prove_w_zero(lambda: functional_call(relu, ps, (x,)), ps)
    assert all(p.proved for p in pr.values())
    assert "aten.max_pool2d_with_indices" in pr["0.weight"].reason and "aten.relu" in pr["0.weight"].reason
    # mutation: tanh after the second convolution flips the verdict below it, not above
    mut = relu_cnn(nn.Tanh)
    mut.load_state_dict(relu.state_dict())
    ps = {k: v.detach() for k, v in mut.named_parameters()}
    pm = prove_w_zero(lambda: functional_call(mut, ps, (x,)), ps)
    below = ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"]
    assert [k for k, p in pm.items() if not p.proved] == below
    assert all("aten.tanh" in pm[k].reason for k in below)
    assert pm["9.weight"].proved and pm["9.bias"].proved
    w = _hdiag(mut, x[0], "4.bias")
    assert float(w.abs().max()) > 1e-8                                      # really non-zero below the tanh
    assert float(_hdiag(mut, x[0], "9.bias").abs().max()) == 0.0


def test_proofs_tied_weights():
    torch.manual_seed(5)
    model = TwiceUsed()
    x = torch.randn(2, 3)
    pr = prove_w_zero(lambda: model(x), dict(model.named_parameters()))
    assert not pr["lin.weight"].proved and "multiplies two tensors" in pr["lin.weight"].reason
    assert pr["lin.bias"].proved               # h = W relu(Wx + b) + b is piecewise linear in b
    assert float(_hdiag(model, x[0], "lin.weight").abs().max()) > 1e-8
    assert float(_hdiag(model, x[0], "lin.bias").abs().max()) == 0.0


def _sq_inplace(W, x):
    y = x @ W.T
    return y.mul_(y.clone())


def _relu_inplace(W, x):
    return (x @ W.T).relu_()


def _fill(W, x, times):
    y = torch.empty(x.shape[0], 3).fill_(W.sum())
    return y * (x @ W.T) if times else y + x


def _slice_copy(W, x, square):
    y = torch.zeros(x.shape[0], 5)
    y[:, :3] = x @ W.T
    return y * y if square else y + 1


def _bn_op(W, x, training):
    """aten.native_batch_norm called directly (the op the cuDNN/MIOpen kernels share the rule of): in eval
    it is affine in the input, so W before it keeps w = 0; in training the batch statistics make it
    smooth in the input and the proof must break."""
    h = (x @ W.T)[:, :, None]                                              # (B, 3, 1)
    rm, rv = torch.zeros(3), torch.ones(3)
    return torch.ops.aten.native_batch_norm(h, torch.full((3,), 2.0), torch.zeros(3), rm, rv, training,
                                            0.1, 1e-5)[0][:, :, 0]


_FUNCS = {  # name: (f(W, x) -> (B, ·), proved?)
    "batch_norm_eval": (lambda W, x: _bn_op(W, x, False), True),
    "batch_norm_training": (lambda W, x: _bn_op(W, x, True), False),
    "relu_then_linear": (lambda W, x: torch.relu(x @ W.T) @ torch.ones(3, 2), True),
    "square": (lambda W, x: (x @ W.T) ** 2, False),
    "mul_inplace_same": (_sq_inplace, False),
    "relu_inplace": (_relu_inplace, True),
    "cat": (lambda W, x: torch.cat([x @ W.T, x], 1), True),
    "div_by_const": (lambda W, x: (x @ W.T) / 3, True),
    "div_by_param": (lambda W, x: x / W.sum(), False),
    "where_leaky": (lambda W, x: torch.where(x @ W.T > 0, x @ W.T, 0.1 * (x @ W.T)), True),
    "times_input": (lambda W, x: (x @ W.T) * x, True),
    "softmax": (lambda W, x: torch.softmax(x @ W.T, -1), False),
    "sort_maxpool": (lambda W, x: torch.sort(x @ W.T, -1).values
                     + nn.functional.max_pool1d((x @ W.T)[:, None], 3)[:, 0], True),
    "slice_copy_square": (lambda W, x: _slice_copy(W, x, True), False),
    "slice_copy_add": (lambda W, x: _slice_copy(W, x, False), True),
    "gram": (lambda W, x: x @ W.T @ W, False),
    "fill_value_times": (lambda W, x: _fill(W, x, True), False),
    "fill_value_plus": (lambda W, x: _fill(W, x, False), True),
}


# issue 9 item 2a: the verdict agrees with brute-force ∂²h/∂θ_i² on op-level cases (in-place ops, views)
@pytest.mark.parametrize("name", sorted(_FUNCS))
def test_proofs_ops_against_brute_force(name):
    f, proved = _FUNCS[name]
    g = torch.Generator().manual_seed(9)
    W, x = torch.randn(3, 3, generator=g), torch.randn(2, 3, generator=g)
    pr = prove_w_zero(lambda: f(W, x), {"W": W})
    assert pr["W"].proved == proved, pr["W"].reason
    out = f(W, x).reshape(-1)                                                 # plain autograd (no vmap):
    wdiag = torch.stack([torch.diagonal(torch.autograd.functional.hessian(       # ∂²h_j/∂θ² for every output j
        lambda w, j=j: f(w.reshape(3, 3), x).reshape(-1)[j], W.reshape(-1))) for j in range(out.numel())])
    assert (float(wdiag.abs().max()) == 0.0) == proved


@pytest.mark.parametrize("fam_name,proved", [("categorical", True), ("gaussian_meanvar", False)])
def test_proofs_family_link(fam_name, proved):
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    fam = families.get(fam_name, C=2) if fam_name == "categorical" else families.get(fam_name)
    x = torch.randn(2, 3)
    ps = {k: v.detach() for k, v in model.named_parameters()}
    pr = prove_w_zero(lambda: fam.link(functional_call(model, ps, (x,))), ps)
    assert all(p.proved == proved for p in pr.values())
    if not proved:
        assert "aten.exp" in pr["2.bias"].reason
    w = _hdiag(model, x[0], "2.bias", fam.link)
    assert (float(w.abs().max()) == 0.0) == proved


# issue 9 item 4: attention through the math kernel; u equals brute-force per-sample jacrev
class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.enc(x).mean(1))


@pytest.mark.parametrize("fastpath", [True, False])
def test_transformer_u_matches_jacrev(fastpath):
    torch.manual_seed(7)
    model = Encoder().eval()
    x = torch.randn(3, 5, 16)
    fam = families.get("categorical", C=3)
    saved = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(fastpath)
    try:
        U = per_sample_jacobians(model, x, fam)
        assert torch.backends.mha.get_fastpath_enabled() is fastpath
        params = {k: v.detach() for k, v in model.named_parameters()}
        with math_attention():
            ref = vmap(jacrev(lambda p, x1: functional_call(model, p, (x1[None],))[0]), in_dims=(None, 0))(params, x)
        assert torch.backends.mha.get_fastpath_enabled() is fastpath
        for k in params:
            assert ((U[k] - ref[k]).abs().max() <= RTOL * ref[k].abs().max()), k
        rev = reverse_engine(model, x, fam, dict(model.named_parameters()), w_mode="exact", progress=False)
        assert torch.backends.mha.get_fastpath_enabled() is fastpath
        for k in ("enc.self_attn.in_proj_weight", "head.weight"):
            q = base_quantities(fam, rev.h, ref[k].reshape(3, 3, -1), None, cdim=1)
            for key in ("fisher", "nv1", "u2"):
                a = rev.parts[k][key].materialize().reshape(3, -1)
                assert (a - q[key]).abs().max() <= RTOL * q[key].abs().max(), (k, key)
        assert rev.info["proofs"]["head.weight"][0] and not rev.info["proofs"]["enc.self_attn.in_proj_weight"][0]
    finally:
        torch.backends.mha.set_fastpath_enabled(saved)


def test_math_attention_restores_on_error():
    saved = torch.backends.mha.get_fastpath_enabled()
    with pytest.raises(KeyError):
        with math_attention():
            assert torch.backends.mha.get_fastpath_enabled() is False
            raise KeyError("boom")
    assert torch.backends.mha.get_fastpath_enabled() is saved


def test_proof_tables_name_real_schema_arguments():
    """Every kernel in the multilinear and batch-norm tables (including the cuDNN / MIOpen ones that only
    run on GPUs) is an aten op whose schema has the argument names the rule reads: a typo would make the
    rule silently fall through to "not on the list" on the device."""
    from fishersym.numeric.proofs import BATCH_NORM_OPS, MULTILINEAR_OPS
    def overloads(op):      # the argument names of every overload (mul has a Tensor and an int one)
        packet = getattr(torch.ops.aten, op)
        return [{a.name for a in getattr(packet, o)._schema.arguments} for o in packet.overloads()]

    for op, (factors, smooth) in MULTILINEAR_OPS.items():
        assert any(set(factors) | set(smooth) <= names for names in overloads(op)), (op, overloads(op))
    for op in BATCH_NORM_OPS:
        names = {a.name for a in getattr(torch.ops.aten, op).default._schema.arguments}
        assert {"input", "weight", "running_mean", "running_var", "training"} <= names, (op, names)
