"""mlp experiment (paper Figure 2, THEORY.md §11): CSV contract, V₂ = 0 in the last layer, bounds, and the
CSV's group means against an independent brute-force autograd computation."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch.func import functional_call, hessian, jacrev

from fishersym.experiments.io import read_csv
from fishersym.experiments.mlp import (MLPSettings, build_mlp, findings, group_names, layer_stats, run_mlp)

TINY = dict(epochs=1, widths=(7, 6, 5), n_train=120, n_test=40, n_samples=10, n_inputs=2, progress=False)
REQUIRED = ["epoch", "group", "fisher", "var1", "var2", "var1_lower", "var1_upper", "var2_lower", "var2_upper"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return run_mlp(tmp_path_factory.mktemp("mlp") / "run", MLPSettings(**TINY))


def test_files_and_csv_contract(tiny_run):
    out = tiny_run["out"]
    for f in ("mlp.csv", "mlp_figure2.png", "mlp_training.png", "settings.json", "findings.json", "findings.md"):
        assert (out / f).stat().st_size > 0, f
    rows = read_csv(out / "mlp.csv")
    assert set(REQUIRED) <= set(rows[0])
    assert len(rows) == (TINY["epochs"] + 1) * 4
    groups = [r["group"] for r in rows if r["epoch"] == 0]
    assert groups == ["layer1", "layer2", "layer3", "layer4"] == sorted(groups)
    s = json.loads((out / "settings.json").read_text())
    assert s["settings"]["widths"] == [7, 6, 5] and s["settings"]["n_samples"] == 10
    assert "optimiser" in s["settings"]["choices"] and s["architecture"] == "64-7-6-5-10"


def test_last_layer_v2_zero_v1_positive_and_bounds_hold(tiny_run):
    rows = read_csv(tiny_run["out"] / "mlp.csv")
    for r in rows:
        if r["group"] == "layer4":
            assert r["var2"] == 0.0 and r["var2_upper"] == 0.0 and r["var1"] > 0
        else:
            assert r["var2"] > 0                         # sigmoid hidden layers: w ≠ 0 (THEORY §6.3)
        for s in ("fisher", "var1", "var2"):
            assert r[f"{s}_lower"] <= r[s] * (1 + 1e-9) and r[s] <= r[f"{s}_upper"] * (1 + 1e-9)
            assert r[f"{s}_lower_sharp"] <= r[s] * (1 + 1e-9) and r[s] <= r[f"{s}_upper_sharp"] * (1 + 1e-9)
        assert r["bounds_hold"] == "True" and r["n_bound_violations"] == 0
        if r["var2"] > 0:
            assert r["ln_ratio_var2_upper"] == pytest.approx(math.log(r["var2_upper"] / r["var2"]))
    assert tiny_run["findings"]["last_layer_var2_zero_every_epoch"] is True


def _brute_group_means(model, x, N):
    """I, V₁, V₂ per parameter from the definitions, by autograd of log p(y|x) over the label space:
    Î₁(y) = (∂ log p_y/∂θ)², Î₂(y) = −∂² log p_y/∂θ², moments under p = softmax(h) (no family code)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    out = {}
    for xi in x:
        def logp(flat_name, t, xi=xi):
            return torch.log_softmax(functional_call(model, {**params, flat_name: t}, (xi.unsqueeze(0),))[0], -1)
        prob = torch.softmax(model(xi.unsqueeze(0))[0].detach(), -1)[:, None]     # (C, 1)
        for name, p in params.items():
            S = jacrev(lambda t, name=name: logp(name, t))(p).reshape(10, -1)      # (C, P) scores
            H = hessian(lambda t, name=name: logp(name, t))(p).reshape(10, p.numel(), p.numel())
            D = -torch.diagonal(H, dim1=1, dim2=2)                                  # (C, P) Î₂(y)
            fi = (prob * S ** 2).sum(0)
            v1 = (prob * (S ** 2 - fi) ** 2).sum(0) / N                            # centred: Var_y Î₁(y)
            v2 = (prob * (D - (prob * D).sum(0)) ** 2).sum(0) / N
            for k, v in (("fisher", fi), ("var1", v1), ("var2", v2)):
                out.setdefault((name.split(".")[0], k), []).append(v)
    return out


def test_csv_group_means_match_brute_force_autograd(tiny_run):
    model = build_mlp(64, TINY["widths"], 10, "sigmoid", 0.1, 0)
    model.load_state_dict(torch.load(tiny_run["out"] / "model.pt"))
    model = model.double().eval()
    x = tiny_run["inputs"]
    brute = _brute_group_means(model, x, TINY["n_samples"])
    rows = [r for r in read_csv(tiny_run["out"] / "mlp.csv") if r["epoch"] == TINY["epochs"]]
    linear_names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    for g, mod in zip(group_names(4), linear_names):
        row = next(r for r in rows if r["group"] == g)
        for k in ("fisher", "var1", "var2"):
            # brute[(mod, k)] holds, input by input, the weight entries and the bias entries
            vals = brute[(mod, k)]
            n_in = len(x)
            total = sum(v.sum() for v in vals) / n_in
            n_params = sum(v.numel() for v in vals) / n_in
            # V₂ ≡ 0 in the last layer: the label-space variance of a constant is rounding, ≤ 1e-12·I²
            assert row[k] == pytest.approx(float(total / n_params), rel=1e-7, abs=1e-12 * row["fisher"] ** 2), (g, k)


def test_relu_gives_v2_zero_everywhere(tmp_path):
    """Piecewise-linear activations: V₂ ≡ 0 a.e. in every layer (THEORY §6.3)."""
    model = build_mlp(64, (6, 5, 4), 10, "relu", 0.0, 1)
    x = torch.rand(3, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rows = layer_stats(model, x, n_samples=3)
    assert all(r["var2"] == 0.0 for r in rows) and all(r["var1"] > 0 for r in rows)
    assert all(r["better_estimator"] == "I2" for r in rows)


def test_variances_scale_as_one_over_n():
    model = build_mlp(64, (6, 5, 4), 10, "tanh", 0.0, 2)
    x = torch.rand(2, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a, b = layer_stats(model, x, 1), layer_stats(model, x, 7)
    for ra, rb in zip(a, b):
        assert rb["fisher"] == pytest.approx(ra["fisher"], rel=1e-12)
        assert rb["var1"] == pytest.approx(ra["var1"] / 7, rel=1e-9)
        assert rb["var2"] == pytest.approx(ra["var2"] / 7, rel=1e-9, abs=0)


def test_findings_on_synthetic_rows():
    rows = []
    for e in range(3):
        for g, (v1, v2) in {"layer1": (1.0, 2.0), "layer2": (1.0, 3.0), "layer3": (2.0, 1.0),
                            "layer4": (5.0, 0.0)}.items():
            rows.append({"epoch": e, "group": g, "var1": v1, "var2": v2, "var1_upper": 50 * v1,
                         "var2_upper": 10 * v2, "ratio_var1_upper": 50.0,
                         "ratio_var2_upper": 10.0 if v2 else float("nan"), "bounds_hold": True})
    f = findings(rows)
    assert f["last_layer_var2_zero_every_epoch"] and f["fraction_epochs_var1_largest_in_last_layer"] == 1.0
    assert f["fraction_epochs_var1_lt_var2"] == {"layer1": 1.0, "layer2": 1.0, "layer3": 0.0}
    assert f["paper"]["V₁ < V₂ in the first three layers"]["reproduced"] is False
    assert f["median_ratio_var1_upper_over_var1"]["layer2"] == 50.0


def test_bad_settings_are_refused_before_writing(tmp_path):
    from fishersym.experiments.io import ExperimentError
    with pytest.raises(ExperimentError, match="unknown activation"):
        run_mlp(tmp_path / "x", MLPSettings(activation="swishy"))
    assert not (tmp_path / "x").exists()


def test_mnist_file_end_to_end_via_cli(tmp_path, capsys):
    import numpy as np
    from fishersym.cli import main
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    np.savez(path, x=rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8), y=rng.integers(0, 10, size=40))
    out = tmp_path / "run"
    assert main(["experiment", "mlp", "--data", str(path), "--out", str(out), "--epochs", "1", "--widths", "5", "4",
                 "3", "-N", "7", "--quiet"]) == 0
    rows = read_csv(out / "mlp.csv")
    assert rows[0]["n_params"] == 784 * 5 + 5
    assert all(r["var2"] == 0.0 for r in rows if r["group"] == "layer4")
    s = json.loads((out / "settings.json").read_text())
    assert s["dataset"]["name"] == "mnist" and s["dataset"]["source"] == str(path)
