"""The DAG runner, LayerNorm/Embedding rules and the engine entry point (issue 9 items 2, 3; THEORY §7, §12).

Independent references, all float64, relative error ≤ 1e-10:
* runner u, w  vs  per-input ``jacrev`` of h and the diagonal of ``torch.func.hessian`` (reverse-over-
  reverse) for small models (``test_layers.brute_model``); for resnet18(width=4) and lenet5(8), u vs
  per-sample ``jacrev`` and w at sampled entries by reverse-over-reverse autograd;
* ``layer_engine``'s I, N·V₁, N·V₂ vs the label-space oracle :func:`fishersym.testing.brute.brute_force`
  (labels enumerated, scores and Hessians by reverse-over-reverse);
* ``layer_engine`` vs the generic engine (nested forward mode, verified by reverse mode) on random
  small convolutional nets (hypothesis), including Gram matrices and P(Î₂ < 0).
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, jacrev, vmap

from fishersym import families
from fishersym.experiments.architectures import ResNet, lenet5, resnet18
from fishersym.families.links import Link
from fishersym.numeric.generic import generic_engine
from fishersym.numeric.layers import ProvedZero, dense, plan_graph, run_graph
from fishersym.numeric.layers.engine import layer_engine, plan_layers
from fishersym.testing.brute import brute_force
from test_layers import _bn, _ln, check_against_brute, check_units_shortcut, close

CAT3 = families.get("categorical", C=3)


def check_graph(model: nn.Module, x: torch.Tensor, source: str | None = None) -> dict:
    """Runner (no link) vs per-input jacrev / Hessian diagonal; proved zeros are zeros of the brute force."""
    model.eval()
    plan, why = plan_graph(model)
    assert plan is not None, why
    if source:
        assert plan.source == source
    with torch.no_grad():
        h, q = run_graph(plan, x)
    return check_against_brute(model, x, h, q)


def check_oracle(model: nn.Module, x: torch.Tensor, family=CAT3, n_inputs: int = 2) -> None:
    """layer_engine's fisher, nv1 (= V₁ at N = 1), nv2 vs the label-space brute force, per input."""
    model.eval()
    plan, why = plan_layers(model, family)
    assert plan is not None, why
    params = dict(model.named_parameters())
    eng = layer_engine(model, x, family, plan, params, route="graph")
    assert eng.path == "fast"
    for b in range(n_inputs):
        bf = brute_force(model, x[b:b + 1], family)
        for n in params:
            for key, ref in (("fisher", bf.fisher), ("nv1", bf.var1), ("nv2", bf.var2)):
                val = eng.parts[n][key].materialize()[b]
                if key == "nv2" and n in eng.info["var2_zero_reason"]:
                    assert val.abs().max() == 0
                    # the oracle's V₂ is the variance of Hessian entries that are 0 up to rounding (~1e-16)
                    assert ref[n].abs().max() <= 1e-24 * (1 + bf.fisher[n].abs().max() ** 2), n
                    continue
                close(val, ref[n])


class Res(nn.Module):
    """Residual block with smooth non-linearities, a fan-out into three consumers, subtraction,
    a scalar shift and both reshape spellings."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = _bn(nn.BatchNorm2d, 3)
        self.act = nn.Tanh()
        self.conv2 = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        self.sig = nn.Sigmoid()
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        y = self.act(self.bn(self.conv1(x)))
        z = self.conv2(y) + x                               # residual
        z = self.sig(z) - 0.5 * 2 + z                       # fan-out of z into sig and the sum; scalar shift
        z = self.pool(z)
        a = z.view(z.size(0), -1)
        return self.fc(torch.flatten(z, 1) + a)


def test_residual_smooth_graph():
    torch.manual_seed(0)
    q = check_graph(Res(), torch.randn(3, 2, 4, 4), "torch.fx")
    assert isinstance(q["fc.weight"].w, ProvedZero)
    assert not isinstance(q["conv1.weight"].w, ProvedZero) and dense(q["conv1.weight"].w).abs().max() > 0


def test_residual_oracle():
    torch.manual_seed(1)
    model = Res().eval()
    x = torch.randn(2, 2, 4, 4)
    check_oracle(model, x)


def tiny_resnet():
    torch.manual_seed(0)
    m = ResNet((1, 1), num_classes=3, width=2)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            with torch.no_grad():
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.8, 1.2)
                mod.weight.normal_(1, 0.1)
                mod.bias.normal_(0, 0.1)
    return m.eval()


def test_tiny_resnet_oracle():
    """A two-stage ResNet (identity and 1×1-conv shortcuts) through layer_engine vs the label-space oracle;
    V₂ ≡ 0 proved for every tensor."""
    m = tiny_resnet()
    assert sum(p.numel() for p in m.parameters()) <= 600
    torch.manual_seed(2)
    x = torch.randn(2, 3, 6, 6)
    check_oracle(m, x)
    plan, _ = plan_layers(m, CAT3)
    eng = layer_engine(m, x, CAT3, plan, dict(m.named_parameters()))
    assert set(eng.info["var2_zero_reason"]) == {n for n, _ in m.named_parameters()}
    assert "add" in eng.info["var2_zero_reason"]["conv1.weight"]


def _sampled_w(model, x, name, idx):
    """w[b, :, i] for the flat entries idx of one tensor by reverse-over-reverse autograd (per input)."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    p0 = params[name]
    out = []
    for b in range(x.shape[0]):
        def h1(t, b=b):
            return functional_call(model, {**params, name: t}, (x[b:b + 1],))[0]

        def d(t, i):
            return jacrev(h1)(t).reshape(-1, p0.numel())[:, i]
        out.append(torch.stack([jacrev(lambda t, i=i: d(t, i))(p0).reshape(-1, p0.numel())[:, i] for i in idx], -1))
    return torch.stack(out)                                          # (B, C, k)


def _per_sample_u(model, x):
    params = {n: p.detach() for n, p in model.named_parameters()}
    return vmap(jacrev(lambda p, xb: functional_call(model, p, (xb.unsqueeze(0),))[0]), in_dims=(None, 0))(params, x)


def test_resnet18_width4():
    """resnet18(width=4), 3×8×8 inputs: u of all 62 tensors equals per-sample jacrev; every w is proved 0
    and is 0 at sampled entries by reverse-over-reverse; layer_engine runs end to end on it."""
    m = resnet18(width=4).double()
    torch.manual_seed(3)
    x = torch.randn(2, 3, 8, 8)
    plan, why = plan_graph(m)
    assert plan is not None and plan.source == "torch.fx", why
    with torch.no_grad():
        h, q = run_graph(plan, x)
    close(h, m(x), 1e-13)
    u_ref = _per_sample_u(m, x)
    assert set(q) == set(u_ref) and len(q) == 62
    for n in q:
        close(dense(q[n].u), u_ref[n])
        assert isinstance(q[n].w, ProvedZero), n
    gen = torch.Generator().manual_seed(0)
    for n in ("conv1.weight", "layers.1.0.shortcut.0.weight", "layers.3.1.bn2.weight"):
        p = dict(m.named_parameters())[n]
        idx = torch.randint(p.numel(), (2,), generator=gen).tolist()
        w = _sampled_w(m, x, n, idx)
        assert w.abs().max().item() <= 1e-12 * max(1.0, u_ref[n].abs().max().item()), n
    fam = families.get("categorical", C=10)
    plan, why = plan_layers(m, fam)
    eng = layer_engine(m, x, fam, plan, dict(m.named_parameters()))
    assert len(eng.info["var2_zero_reason"]) == 62
    fi = eng.parts["fc.weight"]["fisher"].materialize()
    close(fi, fam.quad_forms(h, u_ref["fc.weight"].reshape(2, 10, -1), 1)[0].reshape(fi.shape))


def test_lenet5_tanh():
    """lenet5(input_size=8) with tanh: u of every tensor vs per-sample jacrev, w at sampled entries of every
    tensor vs reverse-over-reverse autograd."""
    m = lenet5(input_size=8).double()
    torch.manual_seed(4)
    x = torch.randn(2, 1, 8, 8)
    plan, why = plan_graph(m)
    assert plan is not None, why
    with torch.no_grad():
        h, q = run_graph(plan, x)
    u_ref = _per_sample_u(m, x)
    gen = torch.Generator().manual_seed(1)
    for n, p in m.named_parameters():
        close(dense(q[n].u), u_ref[n])
        if n.startswith("11."):                                      # the last Linear: nothing curved above
            assert isinstance(q[n].w, ProvedZero)
            continue
        idx = torch.randint(p.numel(), (3,), generator=gen).tolist()
        w = dense(q[n].w).reshape(2, 10, -1)[:, :, idx]
        close(w, _sampled_w(m, x, n, idx))


# ---------------------------------------------------------------- LayerNorm and Embedding nets

def test_layernorm_nets():
    torch.manual_seed(5)
    # LayerNorm between parameters (its exact Hessian enters w of the Linear below), then at the top
    check_graph(nn.Sequential(nn.Linear(4, 5), _ln(5), nn.Tanh(), nn.Linear(5, 4), _ln(4)), torch.randn(3, 4))
    # sequences: Linear on (B, S, n), LayerNorm per position, no affine, then a head
    m = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4, elementwise_affine=False), nn.Linear(4, 4), _ln(4),
                      nn.Flatten(), nn.Linear(8, 3))
    q = check_graph(m, torch.randn(2, 2, 3))
    assert isinstance(q["5.weight"].w, ProvedZero) and not isinstance(q["0.weight"].w, ProvedZero)
    check_oracle(nn.Sequential(nn.Linear(3, 4), _ln(4), nn.Linear(4, 3)), torch.randn(2, 3))


def test_embedding_nets():
    torch.manual_seed(6)
    x = torch.tensor([[1, 3, 1, 0], [4, 4, 2, 4], [0, 1, 2, 3]])      # repeated tokens: the scatter sums
    m = nn.Sequential(nn.Embedding(5, 3), nn.Flatten(), nn.Linear(12, 4), nn.Tanh(), nn.Linear(4, 3))
    q = check_graph(m, x)
    assert not isinstance(q["0.weight"].w, ProvedZero)
    check_graph(nn.Sequential(nn.Embedding(5, 4), _ln(4), nn.Flatten(), nn.Linear(16, 3)), x)
    q = check_graph(nn.Sequential(nn.Embedding(5, 2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)), x)
    assert all(isinstance(v.w, ProvedZero) for v in q.values())
    check_units_shortcut(nn.Embedding(5, 3), x)
    check_oracle(nn.Sequential(nn.Embedding(5, 2), nn.Flatten(), nn.Linear(8, 3), nn.Sigmoid(), nn.Linear(3, 3)), x)
    with pytest.raises(ValueError, match="integer token ids"):
        run_graph(plan_graph(m)[0], x.double())


# ---------------------------------------------------------------- the engine

class TanhLink(Link):
    """h = tanh(o): an elementwise link with curvature (none of the package's links has one)."""

    name = "tanh"

    def __call__(self, o):
        return torch.tanh(o)

    def sym(self, o):
        import sympy as sp
        return [sp.tanh(v) for v in o]

    def g1(self, o):
        return 1 - torch.tanh(o) ** 2

    def g2(self, o):
        t = torch.tanh(o)
        return -2 * t * (1 - t * t)


def compare_generic(model, x, family, grams=True, pneg=True):
    plan, why = plan_layers(model, family)
    assert plan is not None, why
    params = dict(model.named_parameters())
    a = layer_engine(model, x, family, plan, params, grams=grams, pneg_samples=1 if pneg else None, route="graph")
    b = generic_engine(model, x, family, params, grams=grams, pneg_samples=1 if pneg else None)
    for n in params:
        assert set(a.parts[n]) == set(b.parts[n])
        for k in b.parts[n]:
            close(a.parts[n][k].materialize(), b.parts[n][k].materialize())
        if grams:
            for k in b.grams[n]:
                close(a.grams[n][k], b.grams[n][k])
        if b.pneg is not None:
            assert a.pneg is not None
            close(a.pneg[n].materialize(), b.pneg[n].materialize(), 1e-12)
    return a


def test_link_curvature_and_routes():
    """A curved link makes every parameter's w non-zero (the top Linear included); the MLP route and the
    graph route agree; the scale link is linear (proved)."""
    torch.manual_seed(7)
    fam = families.get("gaussian", C=2, link=TanhLink())
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(3, 3)
    a = compare_generic(model, x, fam, pneg=False)
    assert a.info["var2_zero_reason"] == {}
    plan, _ = plan_layers(model, fam)
    assert plan.mlp is not None
    c = layer_engine(model, x, fam, plan, dict(model.named_parameters()), grams=True)
    assert c.info["route"] == "mlp" and a.info["route"] == "graph"
    for n in a.parts:
        for k in a.parts[n]:
            close(c.parts[n][k].materialize(), a.parts[n][k].materialize())
        for k in a.grams[n]:
            close(c.grams[n][k], a.grams[n][k])
    fam2 = families.get("gaussian", C=2, sigma2=0.5)
    b = compare_generic(model, x, fam2, pneg=False)
    assert set(b.info["var2_zero_reason"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}


@st.composite
def conv_nets(draw):
    """Small random conv nets: conv (stride/padding/dilation/groups) → BN(eval)? → act → pool? → conv? → head."""
    g = draw(st.integers(1, 2))
    cin, cmid = g * draw(st.integers(1, 2)), g * draw(st.integers(1, 2))
    k, s, d = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    p = draw(st.integers(0, 1))
    size = draw(st.integers(d * (k - 1) + 1, 6))
    acts = [nn.Tanh, nn.ReLU, nn.Sigmoid, nn.Softplus]
    layers = [nn.Conv2d(cin, cmid, k, stride=s, padding=p, dilation=d, groups=g)]
    if draw(st.booleans()):
        layers.append(_bn(nn.BatchNorm2d, cmid))
    layers.append(draw(st.sampled_from(acts))())
    pool = draw(st.sampled_from(["none", "max", "avg", "adaptive"]))
    layers += {"none": [], "max": [nn.MaxPool2d(2, ceil_mode=True)], "avg": [nn.AvgPool2d(2, ceil_mode=True)],
               "adaptive": [nn.AdaptiveAvgPool2d(2)]}[pool]
    if draw(st.booleans()):
        layers += [nn.Conv2d(cmid, 2, 1), draw(st.sampled_from(acts))()]
    layers.append(nn.Flatten())
    probe = nn.Sequential(*layers)(torch.zeros(1, cin, size, size))
    layers += [nn.Linear(probe.shape[1], 3)]
    if draw(st.booleans()):
        layers += [nn.Tanh(), nn.Linear(3, 3)]
    return nn.Sequential(*layers).eval(), (2, cin, size, size)


@settings(max_examples=25)
@given(conv_nets(), st.integers(0, 2**16))
def test_engine_equals_generic_on_random_conv_nets(case, seed):
    model, shape = case
    torch.manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(mod.weight, 0, 0.7)
    compare_generic(model, torch.randn(shape), CAT3)


def test_mutation_tanh_flips_residual_verdict():
    """issue 9 (correctness): a ReLU residual conv net has every w proved 0; one nn.Tanh inserted between
    conv1 and the output (in the residual branch) flips conv1's verdict (and only the tensors below it)."""

    class Block(nn.Module):
        def __init__(self, mid: nn.Module):
            super().__init__()
            self.conv0 = nn.Conv2d(1, 2, 3, padding=1)
            self.relu0 = nn.ReLU()
            self.conv1 = nn.Conv2d(2, 2, 3, padding=1)
            self.mid = mid
            self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
            self.relu = nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            y = self.relu0(self.conv0(x))
            z = self.conv2(self.mid(self.conv1(y))) + y
            return self.fc(torch.flatten(self.pool(self.relu(z)), 1))

    torch.manual_seed(8)
    x = torch.randn(2, 1, 4, 4)
    base = Block(nn.ReLU())
    q0 = check_graph(base, x)
    assert all(isinstance(v.w, ProvedZero) for v in q0.values())
    mutated = Block(nn.Tanh())
    mutated.load_state_dict(base.state_dict())
    q1 = check_graph(mutated, x)
    for n, v in q1.items():
        below = n.split(".")[0] in ("conv0", "conv1")
        assert isinstance(v.w, ProvedZero) is not below, n
        if below:
            assert dense(v.w).abs().max() > 0, n
    fam = families.get("categorical", C=2)
    plan, _ = plan_layers(mutated, fam)
    eng = layer_engine(mutated, x, fam, plan, dict(mutated.named_parameters()))
    assert set(eng.info["var2_zero_reason"]) == {"conv2.weight", "conv2.bias", "fc.weight", "fc.bias"}
    assert not eng.info["proofs"]["conv1.weight"][0]


# ---------------------------------------------------------------- refusals

class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        if x.sum() > 0:                                          # data-dependent control flow
            return self.fc(x)
        return -self.fc(x)


class FnRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return torch.relu(self.fc(x))


class WithPos(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.pos = nn.Parameter(torch.zeros(2))

    def forward(self, x):
        return self.fc(x) + self.pos


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.act = nn.Tanh()

    def forward(self, x):
        return self.fc(self.act(self.fc(x)))


def test_refusals():
    cases = [
        (Branchy(), "torch.fx could not trace"),
        (FnRelu(), "has no per-layer rule"),
        (WithPos(), "uses a parameter or buffer directly"),
        (Tied(), "tied or shared"),
        (nn.Sequential(nn.Embedding(4, 2, padding_idx=0), nn.Flatten()), "padding_idx"),
        (nn.Sequential(nn.Linear(3, 2), nn.LSTM(2, 2)), "LSTM"),
    ]
    for model, msg in cases:
        plan, why = plan_layers(model, CAT3)
        assert plan is None and msg in why, (type(model).__name__, why)
    plan, why = plan_layers(nn.Sequential(nn.Linear(3, 2)), families.get("gaussian_meanvar"))
    assert plan is None and "not elementwise" in why
    m = nn.Sequential(nn.Linear(3, 2))
    m[0].register_forward_hook(lambda *a: None)
    assert "hook" in plan_layers(m, CAT3)[1]
    assert plan_layers(nn.Linear(3, 3), CAT3)[0].source == "module"     # a single supported module
    m = tiny_resnet()
    plan, _ = plan_layers(m, CAT3)
    m.train()                                                           # changed after planning: refused at run time
    with pytest.raises(ValueError, match="training mode"):
        layer_engine(m, torch.randn(2, 3, 6, 6), CAT3, plan, dict(m.named_parameters()))


def test_dense_quantities_in_column_chunks(monkeypatch):
    """The dense u, w are reduced in column chunks when large (bounded temporaries): same values."""
    import fishersym.numeric.core as core_mod
    torch.manual_seed(9)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(12, 3)).eval()
    x = torch.randn(2, 2, 4, 4)
    ref = compare_generic(model, x, CAT3)
    monkeypatch.setattr(core_mod, "CHUNK_BYTES", 3 * 8 * 5)            # 5 columns (C = 3, float64) at a time
    plan, _ = plan_layers(model, CAT3)
    out = layer_engine(model, x, CAT3, plan, dict(model.named_parameters()), pneg_samples=1, route="graph")
    for n in ref.parts:
        for k in ref.parts[n]:
            close(out.parts[n][k].materialize(), ref.parts[n][k].materialize())
        close(out.pneg[n].materialize(), ref.pneg[n].materialize(), 1e-12)


def test_parameter_subset_and_unknown_name():
    """Only the asked-for tensors are computed, with the same values; an unknown name is an error."""
    torch.manual_seed(10)
    model = Res().eval()
    x = torch.randn(2, 2, 4, 4)
    plan, _ = plan_layers(model, CAT3)
    full = layer_engine(model, x, CAT3, plan, dict(model.named_parameters()))
    sub = {n: p for n, p in model.named_parameters() if n in ("conv1.weight", "fc.bias")}
    part = layer_engine(model, x, CAT3, plan, sub)
    assert set(part.parts) == set(sub) and set(part.info["proofs"]) == set(sub)
    for n in sub:
        for k in full.parts[n]:
            close(part.parts[n][k].materialize(), full.parts[n][k].materialize(), 1e-14)
    with pytest.raises(KeyError, match="not parameters of the model"):
        layer_engine(model, x, CAT3, plan, {"nope": torch.zeros(1)})


@pytest.mark.parametrize("make,shape", [
    (lambda: Res(), (3, 2, 4, 4)),
    (lambda: nn.Sequential(nn.Linear(3, 4), _ln(4), nn.Tanh(), nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2)),
     (3, 3)),
])
def test_second_order_in_batch_chunks(monkeypatch, make, shape):
    """One input at a time (the forward repeated per chunk) gives the same u and w as the whole batch;
    factored values stay factored."""
    import fishersym.numeric.layers.graph as graph_mod
    torch.manual_seed(11)
    model = make().eval()
    x = torch.randn(shape)
    plan, _ = plan_graph(model)
    with torch.no_grad():
        _, ref = run_graph(plan, x)
        monkeypatch.setattr(graph_mod, "_TARGET_BYTES", 1)
        _, got = run_graph(plan, x)
    for n in ref:
        assert type(got[n].w) is type(ref[n].w), n
        close(dense(got[n].w), dense(ref[n].w), 1e-13)
