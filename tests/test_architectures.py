"""The example architectures (issue 9 item 6) through the engines, `fishersym check` and `fishersym report --model`.

Oracle: :func:`fishersym.testing.brute.brute_force` (label enumeration with reverse-over-reverse
Hessians, independent of the engines' closed forms).  It needs full Hessians, so each tiny
instance keeps a few of its parameter tensors trainable (≤ 600 entries, spread over the first,
middle and last layers; the others are constants of the function) — the engines analyse exactly
the trainable ones.  float64 throughout; normwise relative error per key ≤ 1e-10.
"""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from fishersym import families
from fishersym.experiments.architectures import lenet5, resnet18, small_transformer
from fishersym.experiments.data import adapt_inputs, load_model_data
from fishersym.experiments.io import ExperimentError
from fishersym.numeric import conditional_stats
from fishersym.numeric.attention import math_attention
from fishersym.testing.brute import brute_force

FAM = families.get("categorical", C=10)

#: name → (model factory, one input's shape, trainable tensors kept for the oracle)
TINY = {
    "resnet18": (lambda: resnet18(width=4), (3, 8, 8),
                 ["bn1.weight", "layers.0.0.bn1.bias", "layers.1.0.shortcut.0.weight", "layers.3.1.bn2.bias",
                  "fc.bias"]),
    "lenet5": (lambda: lenet5(input_size=8), (1, 8, 8),
               ["0.weight", "0.bias", "3.bias", "7.bias", "9.bias", "11.bias"]),
    "small_transformer": (lambda: small_transformer(d_model=8, nhead=2, dim_feedforward=16, seq_len=4, in_features=4),
                          (4, 4),
                          ["pos", "embed.weight", "encoder.0.self_attn.in_proj_weight", "encoder.0.norm1.weight",
                           "encoder.1.linear1.bias", "encoder.1.linear2.weight", "norm.weight", "head.bias"]),
}


def _tiny(name):
    make, shape, keep = TINY[name]
    model = make().double()
    names = {n for n, _ in model.named_parameters()}
    assert set(keep) <= names, sorted(set(keep) - names)
    for n, p in model.named_parameters():
        p.requires_grad_(n in keep)
    x = torch.randn((1, *shape), dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    return model, x


def _rel_err(a: dict, b: dict, floor: dict | None = None) -> float:
    """max over tensors n of max |a_n − b_n| / max(max |b_n|, floor_n) (b: the oracle), so a small
    tensor (a bias) is held to the same relative accuracy as a large one.  The floor is V₂'s natural
    scale, the tensor's max I², for tensors whose oracle V₂ is 0 up to rounding (piecewise-linear)."""
    worst = 0.0
    for n in b:
        diff = float((a[n][0] - b[n]).abs().max())
        scale = max(float(b[n].abs().max()), (floor or {}).get(n, 0.0), 1e-300)
        worst = max(worst, diff / scale)
    return worst


# "auto": the path a user gets (the fast per-layer engine for the ResNet and LeNet; attention sends the
# transformer to the reverse path); "reverse" forced for the ResNet and LeNet as well.
CASES = [("resnet18", "auto"), ("resnet18", "reverse"), ("lenet5", "auto"), ("lenet5", "reverse"),
         ("small_transformer", "auto")]


@pytest.mark.parametrize("name,path", CASES)
def test_tiny_architectures_match_the_label_space_oracle(name, path):
    model, x = _tiny(name)
    r = conditional_stats(model, x, FAM, 1, path=path)
    with math_attention():      # the oracle's reverse-over-reverse needs the math SDPA kernel too
        bf = brute_force(model, x, FAM, 1)
    assert set(r["fisher"]) == set(TINY[name][2])
    i2 = {n: float(v.abs().max()) ** 2 for n, v in bf.fisher.items()}
    for key in ("fisher", "var1", "var2"):
        err = _rel_err(r[key], getattr(bf, key), i2 if key == "var2" else None)
        assert err <= 1e-10, (name, path, r.path, key, err)
    assert r.path == ("fast" if (path == "auto" and name != "small_transformer") else "reverse"), r.path
    if r.path == "reverse" or name == "resnet18":
        zero = r.info.get("var2_zero_reason", {})
        if name == "resnet18":          # ReLU, BN (eval), convolutions, residual additions: all piecewise linear
            assert set(zero) == set(TINY[name][2])
        else:                           # tanh / softmax-attention before the first tensors: not provably zero
            assert TINY[name][2][0] not in zero and TINY[name][2][-1] in zero
        for n in zero:                  # every tensor proved zero is exactly zero in the oracle
            assert float(bf.var2[n].abs().max()) <= 1e-12 * float(bf.fisher[n].abs().max() ** 2 + 1e-300)


def test_digits_adapted_to_each_architecture():
    d = load_model_data(None)
    shapes = {}
    for m in (resnet18(width=4), lenet5(), small_transformer(d_model=8, nhead=2, dim_feedforward=16)):
        x, how = adapt_inputs(d.x[:2], m)
        shapes[type(m).__name__ + str(len(x.shape))] = (tuple(x.shape[1:]), how)
        assert m(x).shape == (2, 10)
    assert shapes["ResNet4"][0] == (3, 8, 8) and "repeated over 3 channels" in shapes["ResNet4"][1]
    assert shapes["Sequential4"] == ((1, 28, 28), "reshaped (64,) to (1, 8, 8), resized bilinearly to 28×28")
    assert shapes["TransformerClassifier3"] == ((8, 8), "reshaped (64,) to (8, 8)")
    # the explicit CIFAR size: upsampled 8×8 → 32×32, the pixel mean is kept by bilinear resizing
    x, how = adapt_inputs(d.x[:2], resnet18(width=4), input_shape=(3, 32, 32))
    assert x.shape == (2, 3, 32, 32) and "resized bilinearly to 32×32" in how
    assert torch.allclose(x[:, 0], x[:, 2])


def _cli(args, capsys):
    from test_reliability_cli import _run_cli     # main(args) → (exit code, stdout, stderr)
    return _run_cli(args, capsys)


def test_check_cli_on_lenet5(capsys):
    # ReLU LeNet on 8×8: every tensor's V₂ ≡ 0 is proved, so the reverse path needs no w (fast);
    # the tanh LeNet goes through check_model in examples/architectures.py
    code, out, err = _cli(["check", "--model", "fishersym.experiments.architectures:lenet5",
                           "--model-arg", "input_size=8", "--model-arg", "activation='relu'", "--family", "categorical",
                           "--examples", "1", "--n-inputs", "1", "--path", "reverse",
                           "--properties", "nonnegative,structural", "--quiet"], capsys)
    assert code == 0, out + err
    assert "exact path: reverse" in out and "ALL APPLICABLE PROPERTIES HELD" in out
    assert out.count("PASSED") == 2
    code, _, err = _cli(["check", "--model", "fishersym.experiments.architectures:lenet5", "--model-arg", "nope",
                         "--family", "categorical"], capsys)
    assert code == 2 and "--model-arg 'nope' must look like KEY=VALUE" in err


@pytest.fixture
def tiny_user_model(tmp_path, monkeypatch):
    """A user module in the cwd: conv → tanh → linear on 1×6×6 inputs, 3 classes (119 parameters)."""
    name = f"tinynet_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        def net():
            torch.manual_seed(0)
            return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(32, 3))
    """))
    monkeypatch.chdir(tmp_path)
    return f"{name}:net"


def test_report_on_a_user_model_and_npz(tmp_path, tiny_user_model, capsys):
    g = np.random.default_rng(0)
    x = g.random((5, 1, 6, 6))
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 0, 1]))
    out = tmp_path / "rep"
    code, stdout, err = _cli(["report", "--model", tiny_user_model, "--data", str(tmp_path / "d.npz"),
                              "--n-inputs", "3", "--path", "reverse", "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    for f in ("report.html", "report.md", "tensors.png", "layers.csv", "report.json", "settings.json"):
        assert (out / f).is_file(), f
    s = json.loads((out / "report.json").read_text())
    assert [t["group"] for t in s["tensors"]] == ["0.weight", "0.bias", "3.weight", "3.bias"]
    assert s["n_inputs"] == 3 and s["input_shape"] == [1, 6, 6] and s["data"]["adaptation"] == "as given"
    assert s["path"] == "reverse" and "3.weight" in stdout
    # the table against the oracle: scheme "all", N = 1 ⇒ Σ I = mean_x Σ_i I(θ_i|x), Σ Var = Σ_x Σ_i v(θ_i|x) / M²
    import importlib
    model = importlib.import_module(tiny_user_model.split(":")[0]).net().double()
    idx = torch.randperm(5, generator=torch.Generator().manual_seed(0))[:3].sort().values
    xs = torch.as_tensor(x)[idx]
    fam = families.get("categorical", C=3)
    bfs = [brute_force(model, xs[i:i + 1], fam, 1) for i in range(3)]
    for t in s["tensors"]:
        n = t["group"]
        fisher = sum(float(b.fisher[n].sum()) for b in bfs) / 3
        var1 = sum(float(b.var1[n].sum()) for b in bfs) / 9
        var2 = sum(float(b.var2[n].sum()) for b in bfs) / 9
        assert t["fisher_sum"] == pytest.approx(fisher, rel=1e-10)
        assert t["var1_sum"] == pytest.approx(var1, rel=1e-10)
        assert t["var2_sum"] == pytest.approx(var2, rel=1e-10, abs=1e-14 * var1)
        assert t["bounds_hold"] is True
    zero = {t["group"]: t["var2"] for t in s["tensors"]}
    assert zero["3.weight"] == "0 (proved)" and zero["3.bias"] == "0 (proved)" and zero["0.weight"] != "0 (proved)"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "0.weight" in html and "data:image/png;base64," in html and "Where V₂ ≡ 0" in html


@pytest.mark.parametrize("write,needles", [
    (None, ["no such file or folder"]),
    (lambda p: np.savez(p, x=np.zeros((3, 5))),
     ["inputs of shape (5,)", "pass --data with inputs shaped as the model expects"]),
    (lambda p: np.savez(p, x=np.zeros((3, 1, 6, 6)), y=np.zeros(2, dtype=int)),
     ["'y' has shape (2,) but 'x' holds 3 inputs"]),
    (lambda p: np.savez(p, inputs=np.zeros((3, 1, 6, 6))), ["holds arrays ['inputs'], no 'x'"]),
    (lambda p: np.savez(p, x=np.zeros(3)), ["'x' has shape (3,)", "batch dimension"]),
    (lambda p: p.write_bytes(b""), ["the file is empty"]),
])
def test_report_bad_data_is_a_clear_error(tmp_path, tiny_user_model, capsys, write, needles):
    path = tmp_path / "bad.npz"
    if write is not None:
        write(path)
    code, _, err = _cli(["report", "--model", tiny_user_model, "--data", str(path), "--out", str(tmp_path / "o"),
                         "--quiet"], capsys)
    assert code == 2 and "error:" in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    assert not (tmp_path / "o").exists()


def test_report_refuses_mlp_options_with_model(tmp_path, tiny_user_model, capsys):
    code, _, err = _cli(["report", "--model", tiny_user_model, "--epochs", "3", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "--epochs applies to the embedded MLP" in err


def test_pt_files_and_shape_inference_errors(tmp_path):
    x, y = torch.rand(4, 1, 6, 6), torch.tensor([0, 1, 2, 1])
    for obj in ((x, y), {"x": x, "y": y}, x):
        torch.save(obj, tmp_path / "d.pt")
        d = load_model_data(tmp_path / "d.pt")
        assert d.x.shape == (4, 1, 6, 6) and (d.y is None) == (obj is x)
    torch.save({"x": x, "labels": y}, tmp_path / "d.pt")
    with pytest.raises(ExperimentError, match="unknown keys \\['labels'\\]"):
        load_model_data(tmp_path / "d.pt")
    # MNIST IDX files: the held-out split, 784-pixel rows, fitted to LeNet's 1×28×28
    from fishersym.experiments.data import write_idx
    imgs = np.random.default_rng(0).integers(0, 256, (14, 28, 28))
    write_idx(tmp_path / "train-images-idx3-ubyte", imgs)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(14) % 10)
    d = load_model_data(tmp_path / "train-images-idx3-ubyte")
    assert d.x.shape == (2, 784) and d.y.shape == (2,) and 0 <= d.x.min() and d.x.max() <= 1
    xl, how = adapt_inputs(d.x, lenet5(input_size=28))
    assert xl.shape == (2, 1, 28, 28) and how == "reshaped (784,) to (1, 28, 28)"
    emb = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Flatten(), torch.nn.Linear(6, 2))
    with pytest.raises(ExperimentError, match="cannot be inferred .*pass --data"):
        adapt_inputs(np.zeros((2, 7)), emb)


def test_progress_bars_only_on_a_terminal(monkeypatch):
    import io
    import sys
    from fishersym.testing.check import progress_bar

    class Tty(io.StringIO):
        def isatty(self):
            return True
    assert progress_bar(range(2), None).disable                # pytest's stderr is not a terminal
    monkeypatch.setattr(sys, "stderr", Tty())
    bar = progress_bar(range(2), None, desc="x")
    assert not bar.disable and list(bar) == [0, 1]
    assert "x" in sys.stderr.getvalue()
    assert progress_bar(range(2), False).disable              # progress=False: never


def test_model_args_parsed_strictly():
    """--model-arg: Python literals and bare words; true/false/none and other non-literals are refused."""
    from fishersym.commands.check import parse_model_args
    assert parse_model_args(["width=4", "activation=tanh", "shape=(3, 32, 32)", "act='relu'"]) == {
        "width": 4, "activation": "tanh", "shape": (3, 32, 32), "act": "relu"}
    with pytest.raises(ValueError, match="write the Python literal 'False'"):
        parse_model_args(["pretrained=false"])
    with pytest.raises(ValueError, match="neither a Python literal"):
        parse_model_args(["width=4x"])
