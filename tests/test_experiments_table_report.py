"""table experiment (Table 1, THEORY.md §5), the report and `fishersym demo` (issue 6)."""
from __future__ import annotations

import json
import math

import pytest

from fishersym.cli import main
from fishersym.experiments.io import MARKER, read_csv
from fishersym.experiments.report import ReportSettings, recommend, run_report
from fishersym.experiments.table import TableSettings, run_table


def test_table_closed_forms_and_numeric_checks(tmp_path):
    r = run_table(tmp_path / "t", TableSettings(n_points=2, classes=(3,), n_starts=4), echo=False)
    out = r["out"]
    tex = (out / "table.tex").read_text()
    assert r"\begin{tabular}" in tex and r"2\sigma^4" in tex and r"\le 2m(x)" in tex
    assert (out / "table_standalone.tex").read_text().startswith(r"\documentclass")
    rows = read_csv(out / "table.csv")
    for row in rows:
        if row["family"] == "gaussian":                     # Proposition 5.1, exactly
            s2 = row["sigma2"]
            assert row["sigma_min"] == pytest.approx(s2) and row["sigma_max"] == pytest.approx(s2)
            assert row["M_max_opt"] == pytest.approx(2 * s2 ** 2) and row["K_max_opt"] == pytest.approx(3 * s2 ** 2)
        else:                                              # Theorem 5.2 / Corollary R.1 hold at every point
            assert row["sigma_max"] <= row["m_x"] * (1 + 1e-9)
            assert row["M_max_opt"] <= row["M_max_cert"] * (1 + 1e-9) <= 2 * row["m_x"] * (1 + 1e-9)
            if row["restricted"] == "False":
                assert abs(row["sigma_min"]) < 1e-12          # λ_min(Σ) = 0 along 𝟙
                assert row["K_max_opt"] <= 2 * row["sigma_max"] * (1 + 1e-9)
            else:
                assert row["sigma_min"] > 0                   # sharpened on 𝟙^⊥
    assert json.loads((out / "settings.json").read_text())["settings"]["n_points"] == 2


def test_recommend_rules():
    assert recommend(1.0, 0.04, 0.0, 0.1)["recommended"] == "I2"
    r = recommend(1.0, 0.04, 0.09, 0.1)
    assert (r["N_I1"], r["N_I2"], r["recommended"]) == (4, 9, "I1")
    assert recommend(2.0, 1.0, 0.5, 0.1)["N_I2"] == math.ceil(0.5 / 0.04)


SMALL = dict(epochs=1, widths=(6, 5, 4), n_samples=10, n_inputs=1, n_train=150, n_test=30, progress=False)


def test_report_is_self_contained_and_consistent(tmp_path):
    r = run_report(tmp_path / "rep", ReportSettings(**SMALL))
    out = r["out"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") >= 2 and "<img src=\"http" not in page
    for needle in ("Σ Var Î₁", "N for Î₂", "layer4", "Theorem 5.2", "derivation"):
        assert needle in page, needle
    for f in ("report.md", "layers.csv", "report.json", "mlp_figure2.png", "mlp/mlp.csv", "settings.json"):
        assert (out / f).exists(), f
    rows = read_csv(out / "layers.csv")
    assert [row["group"] for row in rows] == ["layer1", "layer2", "layer3", "layer4"]
    last = rows[-1]
    assert last["var2_sum"] == 0.0 and last["var1_sum"] > 0 and last["recommended"] == "I2"
    assert last["N_I2_one_input"] == 1
    for row in rows:
        assert row["bounds_hold"] == "True"
        assert row["var1_lower_sum"] <= row["var1_sum"] <= row["var1_upper_sum"] * (1 + 1e-9)
        assert row["var2_sum"] <= row["var2_upper_sum"] * (1 + 1e-9)
        if row["recommended"] == "I1":                     # the pick needs fewer samples
            assert row["N_I1_one_input"] <= row["N_I2_one_input"]
    summary = json.loads((out / "report.json").read_text())
    # the planner's section (issue 10): recommendation per layer, cost against accuracy, log–log figure
    assert "the planner" in page and "Cost against accuracy" in page and (out / "plan.png").exists()
    plan_rows = read_csv(out / "plan.csv")
    recs = [r for r in plan_rows if r["row"] == "recommended"]
    assert [r["group"] for r in recs] == ["layer1", "layer2", "layer3", "layer4"]
    for r in recs:                                         # each meets the report's target (10 %)
        assert r["meets"] == "True" and r["rel_se"] <= 0.10
    assert {r["row"] for r in plan_rows} >= {"best", "ladder"}
    assert [r["group"] for r in summary["plan"]["recommendation"]] == ["layer1", "layer2", "layer3", "layer4"]
    if "error" not in summary["derivation"]:
        assert (out / "derivation.tex").read_text().startswith(r"\documentclass")
        assert max(summary["derivation"]["max_rel_dev_symbolic_vs_numeric"].values()) < 1e-8


def test_demo_runs_twice_and_protects_foreign_folders(tmp_path, capsys):
    args = ["demo", "--out", str(tmp_path / "d"), "--epochs", "1", "--widths", "5", "4", "--n-samples", "5",
            "--n-inputs", "1", "--quiet"]
    assert main(args) == 0
    assert (tmp_path / "d" / MARKER).exists() and (tmp_path / "d" / "report.html").exists()
    assert main(args) == 0                                  # replaces its own previous output
    text = capsys.readouterr().out
    assert "replacing the previous demo output" in text and "report.html" in text
    for fam in ("bernoulli", "categorical", "gaussian", "gaussian_meanvar", "poisson"):  # the family table
        assert f"== {fam}" in text
    assert text.count("Sigma (numeric)") == 2 * 5 and "kappa4(u,u,u,u)" in text
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(foreign), "--epochs", "1", "--quiet"])
    assert e.value.code == 2 and "--force" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
