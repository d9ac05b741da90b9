"""toy-ngd experiment (paper Figure 1, THEORY.md §11): closed forms vs the package, files, reproducibility."""
from __future__ import annotations

import json

import numpy as np

import pytest
import torch
from torch import nn

from fishersym import families
from fishersym.cli import main
from fishersym.experiments.io import read_csv
from fishersym.experiments.toy_ngd import MODELS, ToySettings, _variance_closed, batch_fisher, make_data, run_toy_ngd
from fishersym.numeric import estimate

TINY = dict(epochs=3, n_seeds=2, n_train=16, n_test=64, check_every=1, progress=False)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("est", ["I1", "I2"])
def test_batch_fisher_equals_package_estimator(model, est):
    """The training loop's closed-form Î₁/Î₂ equal fishersym.numeric.estimate with the same random stream."""
    fam = families.get(MODELS[model][0])
    theta = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    xb = torch.randn(1, 6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    mine = batch_fisher(fam, theta, xb, est, torch.Generator().manual_seed(5))
    lin = nn.Sequential(nn.Linear(2, 1, bias=False)).double()
    with torch.no_grad():
        lin[0].weight.copy_(theta)
    ref = estimate(lin, xb[0], fam, est, 1, torch.Generator().manual_seed(5), progress=False)
    torch.testing.assert_close(mine[0], ref["0.weight"][0], rtol=1e-12, atol=1e-14)


def test_closed_form_variances_match_theory_formulas():
    """THEORY §4: Gaussian N·V₁ = 2σ⁴u⁴ (σ² = 1), Bernoulli p(1−p)(1−2p)²u⁴; V₂ = 0 (w = 0)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 2, dtype=torch.float64, generator=g)
    theta = torch.randn(3, 2, dtype=torch.float64, generator=g)
    B = 4
    v = _variance_closed(families.get("gaussian"), theta, x, B)
    torch.testing.assert_close(v["var1_trace"], (2 * x ** 4).mean(0).sum().expand(3) / B)
    p = torch.sigmoid(theta @ x.T)                                     # (3, 50)
    expect = sum((p * (1 - p) * (1 - 2 * p) ** 2 * x[:, i] ** 4).mean(1) for i in range(2)) / B
    v = _variance_closed(families.get("bernoulli"), theta, x, B)
    torch.testing.assert_close(v["var1_trace"], expect)
    assert torch.equal(v["var2_trace"], torch.zeros(3, dtype=torch.float64))


def test_tiny_run_writes_files_and_shows_i2_exact(tmp_path):
    r = run_toy_ngd(tmp_path / "a", ToySettings(**TINY))
    out = r["out"]
    for f in ("toy_ngd.csv", "toy_ngd_summary.csv", "toy_ngd.png", "toy_ngd_variance.png", "settings.json"):
        assert (out / f).stat().st_size > 0, f
    assert (out / "toy_ngd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_csv(out / "toy_ngd.csv")
    assert len(rows) == 2 * 2 * (3 + 1) * 2                          # models × estimators × epochs × seeds
    assert all(r["var2_trace"] == 0.0 for r in rows)
    assert all(r["var1_trace"] > 0 for r in rows)
    checked = [r for r in rows if r["var1_trace_pkg"] != ""]
    assert checked
    for r in checked:                                                 # the experiment's own package check
        assert r["var1_trace_pkg"] == pytest.approx(r["var1_trace"], rel=1e-9)
        assert abs(r["var2_trace_pkg"]) <= 1e-12 * max(1.0, r["input_var_trace"])
    # independent of the families' code: V₁ from the definition, the score s = (y − η)x over the label
    # space (Bernoulli: y ∈ {0, 1}; Gaussian σ² = 1: Gauss–Hermite nodes, exact for the quartic)
    s_ = ToySettings(**TINY)
    z, wq = np.polynomial.hermite_e.hermegauss(8)
    z, wq = torch.as_tensor(z), torch.as_tensor(wq / wq.sum())
    for mi, model in enumerate(MODELS):
        x, _ = make_data(model, s_.n_train, s_.theta_star, torch.Generator().manual_seed(s_.seed * 1000 + 101 + mi))
        for r in rows:
            if r["model"] != model:
                continue
            h = x @ torch.tensor([r["theta1"], r["theta2"]], dtype=torch.float64)            # (M,)
            if MODELS[model][0] == "bernoulli":
                p = torch.sigmoid(h)
                res, prob = torch.stack([-p, 1 - p]), torch.stack([1 - p, p])                # y = 0, 1
            else:
                res, prob = z[:, None].expand(-1, h.shape[0]), wq[:, None].expand(-1, h.shape[0])
            score = res[..., None] * x                                                       # (labels, M, 2)
            m2, m4 = (prob[..., None] * score ** 2).sum(0), (prob[..., None] * score ** 4).sum(0)
            v1 = float((m4 - m2 ** 2).sum(-1).mean()) / s_.batch_size
            assert r["var1_trace"] == pytest.approx(v1, rel=1e-10), (model, r["epoch"])
    s = json.loads((out / "settings.json").read_text())
    assert s["settings"]["seed"] == 0 and s["settings"]["lr"] == 0.01 and s["runtime_s"] >= 0


def test_runs_are_reproducible_from_the_seed(tmp_path):
    run_toy_ngd(tmp_path / "a", ToySettings(**TINY))
    run_toy_ngd(tmp_path / "b", ToySettings(**TINY))
    run_toy_ngd(tmp_path / "c", ToySettings(**{**TINY, "seed": 1}))
    a, b, c = ((tmp_path / d / "toy_ngd.csv").read_text() for d in "abc")
    assert a == b and a != c


def test_cli_refuses_overwrite_without_force(tmp_path, capsys):
    args = ["experiment", "toy-ngd", "--out", str(tmp_path / "o"), "--epochs", "1", "--seeds", "1",
            "--n-train", "8", "--n-test", "16", "--quiet", "--models", "classification"]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    before = (tmp_path / "o" / "toy_ngd.csv").read_text()
    with pytest.raises(SystemExit) as e:
        main(args + ["--seed", "3"])
    assert e.value.code == 2 and "--force" in capsys.readouterr().err
    assert (tmp_path / "o" / "toy_ngd.csv").read_text() == before     # untouched
    assert main(args + ["--seed", "3", "--force"]) == 0
    assert (tmp_path / "o" / "toy_ngd.csv").read_text() != before


def test_headline_is_the_median_over_epochs_not_a_last_epoch_spike():
    # issue 11: the console summary quoted the last epoch's summed variance, which can spike
    from fishersym.experiments.toy_ngd import headline
    v1 = [1.0, 2.0, 3.0, 4.0, 500.0]                       # a spike at the last epoch
    summary = [{"model": "linear", "estimator": "I1", "epoch": e + 1, "test_nll_mean": 0.5, "test_nll_sd": 0.1,
                "var1_trace_mean": v, "var2_trace_mean": v / 2} for e, v in enumerate(v1)]
    h = headline(summary, epochs=5)["linear/I1"]
    assert h["var1_trace_median_over_epochs"] == 3.0 and h["var2_trace_median_over_epochs"] == 1.5
    assert h["var1_trace_last_epoch"] == 500.0 and h["var1_trace_max_over_epochs"] == 500.0
    assert h["test_nll_mean"] == 0.5
