"""The planner (issue 10 item 2): fishersym.estimators.planner.plan and `fishersym plan`.

Every check recomputes the planner's claims from the exact moments through
:meth:`fishersym.estimators.Analysis.rel_se`, with the group quantile taken independently here
(the k-th smallest entry, k = ⌈q·n⌉), by brute force over the options.
"""
from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch

import fishersym.estimators as fe
from fishersym.estimators.planner import STRUCTURE, _Curve, _default_estimators, _Evaluator, plan

C = 3


@pytest.fixture(scope="module")
def setup():
    """A tanh net 4 → 5 → 3 (43 parameters), 12 inputs with observed labels, every estimator analysed."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, C)).double()
    x = torch.randn(12, 4, dtype=torch.float64, generator=g)
    y = torch.randint(0, C, (12,), generator=g)
    fam = fe.families.get("categorical", C=C)
    a = fe.analyse(net, (x, y), fam)
    return net, (x, y), fam, a


def group_q(a, groups, g, est, n, scheme, m, quantile=0.5) -> float:
    """The group's quantile of Analysis.rel_se, computed here: the ⌈q·n⌉-th smallest entry."""
    rs = a.rel_se(est, n, scheme, m if scheme == "iid" else None)
    vals = sorted(float(v) for p in groups[g] for v in rs[p].reshape(-1))
    return vals[max(1, math.ceil(quantile * len(vals) - 1e-9)) - 1]


def per_input(est: str, C: int, n: int) -> float:
    return fe.get(est).cost(C, n)


@pytest.mark.parametrize("target", [0.3, 0.12])
def test_recommendation_meets_target_and_every_cheaper_option_fails(setup, target):
    net, data, fam, a = setup
    p = plan(net, data, fam, target=target, analysis=a, max_samples=16)
    groups = {g: gp.members for g, gp in p.groups.items()}
    assert set(p.groups) == {"0", "2"} and groups["0"] == ["0.weight", "0.bias"]
    for g, gp in p.groups.items():
        rec = gp.recommended
        assert rec is not None and rec.meets
        # the recommended option really meets the target (recomputed from the Analysis)
        got = group_q(a, groups, g, rec.estimator, rec.n_samples, rec.scheme, rec.m_inputs)
        assert got == pytest.approx(rec.rel_se, rel=1e-12, abs=1e-15) and got <= target
        assert rec.cost == rec.m_inputs * per_input(rec.estimator, C, rec.n_samples)
        # every estimator's best option meets it, and one input fewer does not
        for e, o in gp.best.items():
            if not o.meets:
                continue
            assert group_q(a, groups, g, e, o.n_samples, o.scheme, o.m_inputs) <= target
            if o.scheme == "iid" and o.m_inputs > 1:
                assert group_q(a, groups, g, e, o.n_samples, "iid", o.m_inputs - 1) > target
        # brute force: no option on the grid that is strictly cheaper meets the target
        for e in p.estimators:
            for n in ([1, 2, 4, 8, 16] if fe.get(e).random_labels else [1]):
                per = per_input(e, C, n)
                if a.M * per < rec.cost:
                    assert group_q(a, groups, g, e, n, "all", None) > target, (g, e, n)
                mmax = min(int((rec.cost - 1e-9) // per), 400)
                for m in range(1, mmax + 1):
                    assert group_q(a, groups, g, e, n, "iid", m) > target, (g, e, n, m)


def test_structure_of_the_curves_matches_the_exact_analysis(setup):
    # the closed forms in M' (per_input a/M', batched (a − 2/N)/M' + 2/N, decreasing a/M' + b, laurent)
    # against Analysis.rel_se at M' far from the points they were read off
    net, data, fam, a = setup
    groups = {"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"]}
    for q in (0.5, 0.9):
        ev = _Evaluator(a, groups, q)
        for e in fe.names():
            for n in ([1, 8] if fe.get(e).random_labels else [1]):
                for g in groups:
                    cv = _Curve(ev, e, n, g, STRUCTURE[e])
                    for m in (1, 2, 3, 5, 17, 100, 1000, 10 ** 5):
                        want = group_q(a, groups, g, e, n, "iid", m, q)
                        assert cv.q(m) == pytest.approx(want, rel=1e-9, abs=1e-12), (e, n, g, m)


def test_batched_floor_and_empirical_bias_are_reported_unreachable(setup):
    net, data, fam, a = setup
    # the batched estimator's relative s.e. tends to √(2/N) with M': with N ≤ 4 a target of 0.5 < √(2/4)
    p = plan(net, data, fam, target=0.5, estimators=["batched_squared_gradient"], analysis=a, max_samples=4)
    for g, gp in p.groups.items():
        o = gp.best["batched_squared_gradient"]
        if gp.recommended is None:
            assert not o.meets and "√(2/N)" in o.reason and "no evaluated option" in gp.notes[0]
        # whatever the plan says, the exact values agree: no i.i.d. option reaches 0.5
        groups = {g: gp.members}
        for n in (1, 2, 4):
            for m in (1, 10, 1000, 10 ** 6):
                assert group_q(a, groups, g, "batched_squared_gradient", n, "iid", m) > 0.5
    assert any(gp.recommended is None for gp in p.groups.values())
    assert "NOT REACHED" in p.to_text()
    # the empirical Fisher's bias: a tiny target is out of reach for any M'
    p = plan(net, data, fam, target=1e-4, estimators=["empirical", "batched_empirical"], analysis=a)
    for gp in p.groups.values():
        assert gp.recommended is None
        assert "bias" in gp.best["empirical"].reason and "bias" in gp.best["batched_empirical"].reason


def test_input_term_floor_more_labels_cannot_beat_too_few_inputs(setup):
    # THEORY §8: Var ≥ Var_q I/M' for every unbiased estimator, so with fewer than min_inputs i.i.d. inputs no
    # N reaches the target; the exact Fisher over labels attains the floor, so min_inputs is tight
    net, data, fam, a = setup
    target = 0.15
    p = plan(net, data, fam, target=target, analysis=a, max_samples=16)
    mom = a.moments
    for g, gp in p.groups.items():
        groups = {g: gp.members}
        m0 = gp.min_inputs
        assert m0 is not None and m0 > 1
        assert group_q(a, groups, g, "exact_over_labels", 1, "iid", m0) <= target
        assert group_q(a, groups, g, "exact_over_labels", 1, "iid", m0 - 1) > target
        for e in fe.names():
            if fe.get(e).biased:
                continue
            for n in ([1, 2 ** 20] if fe.get(e).random_labels else [1]):
                assert group_q(a, groups, g, e, n, "iid", m0 - 1) > target, (e, n)
                # per entry: rel² ≥ Var_q I/(M' Ī²)
                rs = a.rel_se(e, n, "iid", m0 - 1)
                for name in gp.members:
                    ibar = mom.I_sum[name] / mom.M
                    live = ibar > 0
                    floor = mom.I_var[name][live] / ((m0 - 1) * ibar[live] ** 2)
                    assert bool((rs[name][live] ** 2 >= floor * (1 - 1e-12)).all()), (e, n, name)
        # and the plan's iid options all use at least min_inputs inputs (unbiased ones)
        for o in gp.candidates:
            if o.scheme == "iid" and o.meets and not o.biased:
                assert o.m_inputs >= m0


def test_budget_mode_is_the_best_within_the_budget(setup):
    net, data, fam, a = setup
    B = 40
    p = plan(net, data, fam, budget=B, analysis=a, max_samples=8)
    for g, gp in p.groups.items():
        groups = {g: gp.members}
        rec = gp.recommended
        assert rec.cost <= B
        best_seen = math.inf
        for e in p.estimators:
            for n in ([1, 2, 4, 8] if fe.get(e).random_labels else [1]):
                per = per_input(e, C, n)
                for m in range(1, int(B // per) + 1):
                    best_seen = min(best_seen, group_q(a, groups, g, e, n, "iid", m))
                if a.M * per <= B:
                    best_seen = min(best_seen, group_q(a, groups, g, e, n, "all", None))
        assert rec.rel_se == pytest.approx(best_seen, rel=1e-9, abs=1e-14)
        # the ladder's entry at the largest cost ≤ B is no better than the recommendation either
        for r in gp.ladder:
            assert r["cost"] <= r["budget"]
            if r["budget"] <= B:
                assert r["rel_se"] >= best_seen * (1 - 1e-9)


def test_bad_input_is_a_clear_error(setup):
    net, data, fam, a = setup
    for bad in (0, -0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="target must be a finite number > 0"):
            plan(net, data, fam, target=bad, analysis=a)
    with pytest.raises(ValueError, match="exactly one of target= .* neither"):
        plan(net, data, fam, analysis=a)
    with pytest.raises(ValueError, match="exactly one of target= .* both"):
        plan(net, data, fam, target=0.1, budget=100, analysis=a)
    with pytest.raises(ValueError, match="minimum budget is 1"):
        plan(net, data, fam, budget=0.5, analysis=a)
    with pytest.raises(ValueError, match="exact_over_labels: 3 backward passes per input.*minimum budget is 3"):
        plan(net, data, fam, budget=2, estimators=["exact_over_labels"], analysis=a)
    with pytest.raises(ValueError, match="unknown estimator 'nosuch'.*squared_score.*batched_empirical"):
        plan(net, data, fam, target=0.1, estimators=["squared_score", "nosuch"])
    with pytest.raises(ValueError, match="quantile must be a number in"):
        plan(net, data, fam, target=0.1, quantile=0, analysis=a)
    with pytest.raises(ValueError, match="unknown groups \\['nope'\\]"):
        plan(net, data, fam, target={"0": 0.1, "2": 0.1, "nope": 0.1}, analysis=a)
    with pytest.raises(ValueError, match="no value for the groups \\['2'\\]"):
        plan(net, data, fam, target={"0": 0.1}, analysis=a)


def test_groups_table_text_and_csv(setup, tmp_path):
    net, data, fam, a = setup
    p = plan(net, data, fam, target={"all": 0.2}, groups={"all": ["0", "2"]}, analysis=a, quantile=0.9,
             max_samples=8)
    assert list(p.groups) == ["all"] and p.groups["all"].n_params == 43
    rec = p.groups["all"].recommended
    got = group_q(a, {"all": p.groups["all"].members}, "all", rec.estimator, rec.n_samples, rec.scheme,
                  rec.m_inputs, 0.9)
    assert got <= 0.2 and got == pytest.approx(rec.rel_se, rel=1e-12, abs=1e-15)
    rows = p.table()
    assert rows[0]["row"] == "recommended" and rows[0]["estimator"] == rec.estimator
    assert {r["row"] for r in rows} == {"recommended", "best", "candidate", "ladder"}
    text = p.to_text()
    assert text.index("Recommendation per group") < text.index("== all") < text.index("Cost against accuracy")
    assert "Every number is exact" in text
    path = p.to_csv(tmp_path / "plan.csv")
    from fishersym.experiments.io import read_csv
    back = read_csv(path)
    assert len(back) == len(rows) and back[0]["estimator"] == rec.estimator


def test_default_estimators_leave_out_param_hutchinson_and_unlabelled_empirical(setup):
    chosen, left = _default_estimators(P=9000, M=10, C=3, labels=True)
    assert "param_hutchinson" not in chosen and "estimators=[..., 'param_hutchinson']" in left["param_hutchinson"]
    chosen, left = _default_estimators(P=2000, M=5000, C=10, labels=True)     # 2e11 flops
    assert "param_hutchinson" in left and "2e+11 flops" in left["param_hutchinson"]
    chosen, left = _default_estimators(P=43, M=12, C=3, labels=False)
    assert "param_hutchinson" in chosen and "empirical" not in chosen and "(x, y)" in left["empirical"]
    net, (x, y), fam, a = setup
    p = plan(net, x, fam, target=0.2, max_samples=4)         # inputs without labels
    assert set(p.not_evaluated) == {"empirical", "batched_empirical"}
    assert "empirical: needs the observed labels" in p.to_text()


@pytest.fixture
def tiny_module(tmp_path, monkeypatch):
    name = f"plannet_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        def net(width=4):
            torch.manual_seed(0)
            return nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 3))
    """))
    monkeypatch.chdir(tmp_path)
    g = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=g.standard_normal((10, 3)), y=g.integers(0, 3, 10))
    return f"{name}:net", tmp_path / "d.npz"


def test_cli_prints_the_recommendation(tiny_module, tmp_path, capsys):
    from test_reliability_cli import _run_cli
    spec, data = tiny_module
    out = tmp_path / "plan.csv"
    code, stdout, err = _run_cli(["plan", "--model", spec, "--model-arg", "width=5", "--data", str(data),
                                  "--target", "0.3", "--max-samples", "8", "--csv", str(out)], capsys)
    assert code == 0, err
    assert "Recommendation per group" in stdout and "Every number is exact" in stdout
    from fishersym.experiments.io import read_csv
    rows = read_csv(out)
    recs = [r for r in rows if r["row"] == "recommended"]
    assert [r["group"] for r in recs] == [0.0, 2.0]            # read_csv makes numeric cells floats
    for r in recs:
        assert r["estimator"] in stdout and r["rel_se"] <= 0.3
    code, stdout, err = _run_cli(["plan", "--model", spec, "--data", str(data), "--budget", "50",
                                  "--estimators", "squared_score,exact_over_labels", "--no-ladder"], capsys)
    assert code == 0, err
    assert "budget 50 backward passes" in stdout
    assert "Cost against accuracy" not in stdout


@pytest.mark.parametrize("args,needles", [
    (["--target", "0"], ["--target", "expected a finite number > 0"]),
    (["--budget", "0.5"], ["minimum budget is 1"]),
    (["--target", "0.1", "--budget", "9"], ["not allowed with argument"]),
    (["--estimators", "nosuch"], ["unknown estimator 'nosuch'", "squared_score"]),
    (["--quantile", "2"], ["--quantile must be in (0, 1]"]),
])
def test_cli_bad_input(tiny_module, capsys, args, needles):
    from test_reliability_cli import _run_cli
    spec, data = tiny_module
    code, _, err = _run_cli(["plan", "--model", spec, "--data", str(data), *args], capsys)
    assert code == 2 and "error:" in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def test_entries_with_zero_fisher_are_exact_zeros_or_infinite():
    # a dead ReLU unit: its weights have I = 0 at every input (relative s.e. 0/0 = 0); the curves keep them at
    # the bottom of the order, whatever the quantile, and agree with the exact Analysis
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, C)).double()
    with torch.no_grad():
        net[0].bias[0] = -100.0
    x = torch.randn(8, 3, dtype=torch.float64, generator=g)
    y = torch.randint(0, C, (8,), generator=g)
    fam = fe.families.get("categorical", C=C)
    a = fe.analyse(net, (x, y), fam)
    assert float(a.moments.I_sum["0.weight"][0].abs().max()) == 0.0
    groups = {"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"]}
    for q in (0.1, 0.5, 1.0):
        ev = _Evaluator(a, groups, q)
        for e in fe.names():
            for g_ in groups:
                cv = _Curve(ev, e, 2 if fe.get(e).random_labels else 1, g_, STRUCTURE[e])
                for m in (1, 7, 300):
                    want = group_q(a, groups, g_, e, 2 if fe.get(e).random_labels else 1, "iid", m, q)
                    assert cv.q(m) == pytest.approx(want, rel=1e-9, abs=1e-12), (e, g_, q, m)
    p = plan(net, (x, y), fam, target=0.2, analysis=a, quantile=0.1, max_samples=4)
    assert p.groups["0"].recommended.rel_se == 0.0 and p.groups["0"].recommended.cost == 1.0


def test_the_plan_says_when_the_input_term_dominates():
    # a regression net (Gaussian family, C = 1: the exact Fisher over labels costs one pass per input) on 200
    # unlabelled inputs: i.i.d. subsets beat every input once, and the label-free estimator is all input term.
    # The note's share is (input term)²/rel², the input term √(Q(Var_q I/Ī²)/M') recomputed here from the moments
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).double()
    x = torch.randn(200, 4, dtype=torch.float64, generator=g)
    p = plan(net, x, fe.families.get("gaussian"), target=0.3, max_samples=16,
             estimators=["squared_score", "exact_over_labels"])
    mom = p.analysis.moments
    seen = 0
    for gp in p.groups.values():
        r = gp.recommended
        assert r.scheme == "iid" and r.m_inputs < p.M and r.m_inputs >= gp.min_inputs
        vals = sorted(float(v) for n in gp.members
                      for v in (mom.I_var[n] / (mom.I_sum[n] / mom.M) ** 2).reshape(-1))
        q_in = vals[math.ceil(0.5 * len(vals)) - 1]
        assert gp.input_q == pytest.approx(q_in, rel=1e-12)
        assert r.input_share == pytest.approx(q_in / r.m_inputs / r.rel_se ** 2, rel=1e-9)
        if r.input_share >= 0.5:
            seen += 1
            assert "input term dominates" in gp.notes[0] and f"at least {gp.min_inputs} i.i.d. inputs" in gp.notes[0]
            assert "input term dominates" in p.to_text()
    assert seen >= 1


def test_module_doctests():
    import doctest
    import fishersym.estimators.planner as P
    res = doctest.testmod(P)
    assert res.attempted >= 2 and res.failed == 0
