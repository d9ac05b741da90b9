"""Cost estimate / dry run (issue 9 items 2d, 5): the route of every parameter tensor (with the
proof of V₂ ≡ 0 where it holds), passes, bytes and a calibrated time; the refusal above the budget
states the estimate and the options; a raised budget prints the estimate before the work starts."""
import math

import pytest
import torch
from torch import nn

from fishersym import families
from fishersym.experiments.architectures import small_transformer
from fishersym.numeric import conditional, conditional_stats
from fishersym.numeric.cost import CostEstimate, cost_estimate, sample_size

CAT = families.get("categorical", C=3)


def _cnn(act):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), act, nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3)).eval()


def _check_numbers(est: CostEstimate, model: nn.Module):
    names = [n for n, _ in model.named_parameters()]
    assert [t.name for t in est.tensors] == names
    assert [t.numel for t in est.tensors] == [p.numel() for p in model.parameters()]
    for t in est.tensors:
        assert math.isfinite(t.seconds) and t.seconds > 0, t
        assert t.bytes > 0 and t.backward_passes >= 0 and t.forward_passes > 0, t
    assert est.total_seconds > 0 and est.peak_bytes > 0 and est.forward_seconds > 0 and est.backward_seconds > 0
    table = str(est)
    for n in names:
        assert n in table
    return table


def test_relu_cnn_every_tensor_proved():
    model = _cnn(nn.ReLU())
    est = cost_estimate(model, torch.randn(3, 1, 6, 6), CAT, path="reverse")
    assert est.path == "reverse" and est.w_entries == 0 and est.w_entry_seconds is None
    for t in est.tensors:
        assert t.w.startswith("proved zero:") and t.backward_passes == 3 and t.forward_passes == 1
    assert "aten.relu" in est.tensors[0].w
    _check_numbers(est, model)


@pytest.mark.parametrize("v2", ["exact", "sample"])
def test_tanh_cnn_conv_weights_not_proved(v2):
    model = _cnn(nn.Tanh())
    est = cost_estimate(model, torch.randn(2, 1, 6, 6), CAT, path="reverse", v2=v2,
                        v2_sample=0.5 if v2 == "sample" else None)
    by = {t.name: t for t in est.tensors}
    for n in ("0.weight", "0.bias"):
        assert not by[n].w.startswith("proved") and "aten.tanh" in by[n].w
        want = by[n].numel if v2 == "exact" else sample_size(by[n].numel, 0.5)
        assert by[n].w_entries == want and by[n].w.startswith("exact" if v2 == "exact" else "sampled")
        assert by[n].forward_passes > 1
    for n in ("4.weight", "4.bias"):
        assert by[n].w.startswith("proved zero:") and by[n].w_entries == 0
    assert est.w_entry_seconds is not None and est.w_entry_seconds > 0
    _check_numbers(est, model)


def test_tiny_transformer():
    model = small_transformer(d_model=8, nhead=2, dim_feedforward=16, seq_len=4, in_features=4).double()
    est = cost_estimate(model, torch.randn(2, 4, 4), families.get("categorical", C=10), path="reverse")
    by = {t.name: t for t in est.tensors}
    head = [n for n in by if n.startswith("head.")]
    assert head and all(by[n].w.startswith("proved zero:") for n in head)
    smooth = [n for n in by if not by[n].w.startswith("proved")]
    assert smooth and all(by[n].w_entries == by[n].numel for n in smooth)
    in_proj = by["encoder.0.self_attn.in_proj_weight"]
    assert "aten.bmm" in in_proj.w and "QKᵀ" in in_proj.w
    assert "native_layer_norm" in by["encoder.1.linear2.weight"].w
    _check_numbers(est, model)


def test_auto_path_and_generic():
    mlp = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    est = cost_estimate(mlp, torch.randn(2, 3), "categorical")
    assert est.path == "fast" and all("fast" in t.u for t in est.tensors)
    cnn = _cnn(nn.Tanh())
    est = cost_estimate(cnn, torch.randn(2, 1, 6, 6), CAT)                 # per-layer rules
    assert est.path == "fast" and all("per-layer" in t.u for t in est.tensors)
    assert "proved zero" in est.tensors[-1].w and "exact" in est.tensors[0].w   # head proved, conv under tanh
    _check_numbers(est, cnn)
    est = cost_estimate(cnn, torch.randn(2, 1, 6, 6), CAT, path="generic")
    assert est.path == "generic" and all(t.w_entries == t.numel for t in est.tensors)
    _check_numbers(est, cnn)


def test_refusal_states_cost_and_options():
    model = _cnn(nn.Tanh())
    with pytest.raises(ValueError, match=r"could not be proved.*max_params=10\. "
                                         r"Estimated cost: about [0-9.]+ (ms|s|min|h) and .*B.*"
                                         r"v2='sample'.*chunk_size=.*float32.*GPU"):
        conditional_stats(model, torch.randn(2, 1, 6, 6), CAT, path="reverse", max_params=10)
    # a sample within the budget runs
    r = conditional_stats(model, torch.randn(2, 1, 6, 6), CAT, path="reverse", max_params=10, v2="sample",
                          v2_sample=2)
    assert r.estimated


def test_raised_budget_prints_the_estimate_first(monkeypatch, capsys):
    """Above the default limit (patched small here), a raised max_params runs, after printing the table."""
    monkeypatch.setattr(conditional, "GENERIC_MAX_PARAMS", 5)
    model = _cnn(nn.Tanh())
    conditional_stats(model, torch.randn(1, 1, 6, 6), CAT, path="reverse", max_params=1000)
    err = capsys.readouterr().err
    assert "fishersym cost estimate" in err and "starting a long exact computation" in err
    for n, _ in model.named_parameters():
        assert n in err
