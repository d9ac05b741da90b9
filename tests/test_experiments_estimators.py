"""`fishersym experiment estimators` (issue 10 item 5): the cost table, the Monte Carlo check of every
estimator's predicted variance, the EWC comparison, figures, settings validation and the CLI."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import fishersym.estimators as fe
from fishersym import families
from fishersym.cli import main
from fishersym.experiments.estimators import (COST_COLUMNS, EWC_COLUMNS, MC_COLUMNS, EstimatorSettings, _mc_plan,
                                              mc_check, run_estimators)
from fishersym.experiments.io import ExperimentError, read_csv

TINY = dict(epochs=1, widths=(8,), n_train=160, n_analysis=24, n_mc_inputs=3, m_ladder=(1, 4, 16),
            n_samples=(1, 2), ewc_inputs=8, ewc_population=48, progress=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Both models (the CNN: LeNet-5 on 8x8 images, 19,754 parameters), 40 draws per check."""
    return run_estimators(tmp_path_factory.mktemp("estimators") / "o", EstimatorSettings(repeats=40, **TINY))


def test_writes_figures_csvs_and_every_estimator_passes_its_monte_carlo_check(run):
    out = run["out"]
    for name in ("estimators_cost.png", "estimators_cost_layers.png", "estimators_mc.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    for name in ("estimators_cost.csv", "estimators_mc.csv", "estimators_ewc.csv", "estimators_mc_entries.csv",
                 "findings.md", "findings.json", "settings.json"):
        assert (out / name).stat().st_size > 0
    assert (out / "estimators_cost.csv").read_text().splitlines()[0] == ",".join(COST_COLUMNS)
    assert (out / "estimators_mc.csv").read_text().splitlines()[0] == ",".join(MC_COLUMNS)
    assert (out / "estimators_ewc.csv").read_text().splitlines()[0] == ",".join(EWC_COLUMNS)
    mc = read_csv(out / "estimators_mc.csv")
    for model in ("mlp", "cnn"):
        rows = [row for row in mc if row["model"] == model]
        analysed = set(fe.names()) - ({"param_hutchinson"} if model == "cnn" else set())
        # every analysed estimator has at least one check, and every check passes within its tolerance
        assert {row["estimator"] for row in rows} == analysed
        assert len(rows) == len(_mc_plan(sorted(analysed), 3))
        for row in rows:
            assert row["passed"] == "True", row
            assert row["var_ratio_lo"] <= row["var_ratio"] <= row["var_ratio_hi"]
            assert row["mean_dev_lo"] <= row["mean_dev"] <= row["mean_dev_hi"]
            assert row["n_tested"] > 0
        assert float(np.median([row["var_ratio_hi"] for row in rows])) < 2     # a factor 2 would show
    assert run["findings"]["all_mc_checks_pass"]
    assert "All Monte Carlo checks pass: **yes**" in run["findings_md"]
    # the CNN's P x P Fisher is too big for param_hutchinson, and the findings say so
    assert "param_hutchinson left out" in run["findings_md"]
    assert "19754" in run["findings"]["models"]["cnn"]["excluded"]["param_hutchinson"]


def test_cost_table_matches_the_independent_dataset_stats_engine(run):
    # squared_score, scheme iid, N = 1: Var = (Var_q I + E_q v)/M' (THEORY §8) from numeric.dataset_stats
    from fishersym.numeric import dataset_stats
    r = run
    m64 = copy.deepcopy(r["models"]["mlp"]).double().eval()
    x, _ = r["analysis_inputs"]["mlp"]
    rows = [row for row in r["rows"] if row["model"] == "mlp" and row["estimator"] == "squared_score"
            and row["group"] == "all parameters"
            and row["scheme"] == "iid" and row["n_samples"] == 1]
    assert [row["m_inputs"] for row in rows] == [1, 4, 16]
    for row in rows:
        d = dataset_stats(m64, x, "categorical", 1, scheme="iid", m_inputs=row["m_inputs"], progress=False,
                          use_eig=False, sharpened=False)
        rel = torch.cat([(d["var1"][n].clamp_min(0).sqrt() / d["fisher"][n]).nan_to_num(0.0).reshape(-1)
                         for n in d["var1"]])
        assert row["median_rel_se"] == pytest.approx(float(rel.median()), rel=1e-9)
        assert row["cost"] == row["m_inputs"]
    # more inputs, smaller error; batched at large M' tends to sqrt(2/N) (THEORY §13)
    assert rows[0]["median_rel_se"] > rows[1]["median_rel_se"] > rows[2]["median_rel_se"]


def test_ewc_comparison_follows_from_the_variance_split(run):
    ewc = run["findings"]["models"]["mlp"]["ewc"]
    assert ewc["M"] == 48 and ewc["M_prime"] == 8 and ewc["threshold"] == pytest.approx(8 / 48)
    rows = read_csv(run["out"] / "estimators_ewc.csv")
    g = {row["option"]: row for row in rows if row["group"] == "all parameters" and row["model"] == "mlp"}
    exact = next(v for k, v in g.items() if k.startswith("exact_over_labels"))
    one = g["squared_score, N = 1 on every input"]
    assert exact["cost"] == 8 * 10 and one["cost"] == 48
    batched = g["batched_squared_gradient, N = 1 on every input"]
    assert batched["median_rel_se"] > one["median_rel_se"]
    text = run["findings_md"]
    assert "EWC study's ordering" in text and ("**holds**" in text or "**does not hold**" in text)


def _tiny_net():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double().eval()
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    return net, x, families.get("categorical", C=3)


@pytest.mark.parametrize("estimator,mutation", [
    ("batched_squared_gradient", "no cross term"),       # predicted as if per-sample squares
    ("output_hutchinson_gaussian", "factor 2 missing"),  # I_m^2 instead of 2 I_m^2
    ("squared_score", None)])
def test_mc_check_catches_a_missing_cross_term_and_a_missing_factor_2(estimator, mutation):
    # the tolerance is tight enough to catch the typical formula errors (false alarm 1e-6 per check)
    net, x, fam = _tiny_net()
    a = fe.analyse(net, x, fam, ["squared_score", estimator])
    mean, var = a.mean(estimator), a.variance(estimator)
    if mutation == "no cross term":
        var = a.variance("squared_score")
    elif mutation == "factor 2 missing":
        var = {n: v / 2 for n, v in var.items()}
    rec, ent = mc_check(lambda g: fe.sample(net, x, fam, estimator, generator=g), mean, var, 300,
                        torch.Generator().manual_seed(11), 1e-6)
    assert rec["passed"] is (mutation is None), rec
    assert len(ent["predicted_se"]) == rec["n_tested"] == sum(p.numel() for p in net.parameters())


def test_mc_check_requires_numerically_zero_entries_to_stay_put():
    net, x, fam = _tiny_net()
    a = fe.analyse(net, x, fam, ["neg_hessian"])
    mean, var = a.mean("neg_hessian"), a.variance("neg_hessian")
    assert float(var["2.bias"].abs().max()) == 0.0        # the last layer: w = 0, V2 = 0 (THEORY §6)
    rec, _ = mc_check(lambda g: fe.sample(net, x, fam, "neg_hessian", generator=g), mean, var, 20,
                      torch.Generator().manual_seed(1))
    assert rec["passed"] and rec["n_zero"] >= 3 and rec["zero_max_dev"] < 1e-12
    wrong = {n: (v + 0.01 if n == "2.bias" else v) for n, v in mean.items()}
    rec, _ = mc_check(lambda g: fe.sample(net, x, fam, "neg_hessian", generator=g), wrong, var, 20,
                      torch.Generator().manual_seed(1))
    assert not rec["passed"] and not rec["zero_pass"]


@pytest.mark.parametrize("change,word", [
    (dict(models=("mlp", "vit")), "models"), (dict(models=()), "models"), (dict(repeats=5), "repeats"),
    (dict(n_mc_inputs=300), "n_mc_inputs"), (dict(false_alarm=0.0), "false_alarm"),
    (dict(false_alarm=0.7), "false_alarm"), (dict(m_ladder=(4, 2)), "m_ladder"), (dict(n_samples=(2, 4)), "n_samples"),
    (dict(lr=float("nan")), "lr"), (dict(activation="nope"), "activation"), (dict(dropout=1.0), "dropout"),
    (dict(n_analysis=1), "n_analysis"), (dict(ewc_inputs=0), "ewc_inputs"), (dict(epochs=-1), "epochs")])
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, change, word):
    with pytest.raises(ExperimentError, match=word):
        run_estimators(tmp_path / "o", EstimatorSettings(**{**TINY, **change}))
    assert not (tmp_path / "o").exists()


def test_cli_help_and_usage_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["experiment", "estimators", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--out", "--seed", "--epochs", "--force", "--repeats", "--false-alarm", "--models", "--ewc-inputs"):
        assert opt in text
    for bad in (["--false-alarm", "0.9"], ["--repeats", "0"], ["--models", "vit"]):
        with pytest.raises(SystemExit) as e:
            main(["experiment", "estimators", "--out", str(tmp_path / "o"), *bad])
        assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["experiment", "estimators", "--out", str(tmp_path / "o"), "--repeats", "5"])
    assert e.value.code == 2 and "repeats" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
