"""Issue 11 item 6: a family given by name takes its size from the model's outputs
(:func:`fishersym.families.resolve`, called by every entry point through
:func:`fishersym.numeric.conditional.resolve_family`).  The results with the name alone must equal
those with the size given explicitly; explicit sizes that contradict the model are refused."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import fishersym.estimators as fe
from fishersym import families
from fishersym.cli import main
from fishersym.experiments.report import _model_family
from fishersym.numeric import conditional_stats, dataset_stats
from fishersym.testing import check_model

HERE = Path(__file__).parent


def _mlp(n_out: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, n_out)).double()


def _x(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def _same(a, b) -> None:
    """Two StatsResults with the same groups and per-group values (exactly: the same computation)."""
    assert a.groups.keys() == b.groups.keys()
    for g in a.groups:
        assert a.groups[g].keys() == b.groups[g].keys()
        for k in a.groups[g]:
            torch.testing.assert_close(a.groups[g][k], b.groups[g][k], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name,params", [("categorical", {}), ("poisson", {}), ("gaussian", {"sigma2": 0.5})])
def test_conditional_and_dataset_stats_infer_size(name, params):
    n_out = 3 if name == "categorical" else 2
    m, x = _mlp(n_out), _x()
    explicit = families.get(name, C=n_out, **params)
    r_name = conditional_stats(m, x, families.resolve(name, params, out_dim=n_out))
    r_str = conditional_stats(m, x, name) if not params else None
    r_exp = conditional_stats(m, x, explicit)
    _same(r_name, r_exp)
    if r_str is not None:
        _same(r_str, r_exp)
        _same(dataset_stats(m, x, name, batch_size=4), dataset_stats(m, x, explicit, batch_size=4))
        # list of batches and a re-iterable loader: the size is read from their first batch
        batches = [x[:3], x[3:]]
        _same(dataset_stats(m, batches, name), dataset_stats(m, batches, explicit))
        class Reiterable:           # a loader-like object: each iter() starts a fresh pass
            def __iter__(self):
                return iter([x[:4], x[4:]])
        _same(dataset_stats(m, Reiterable(), name), dataset_stats(m, x, explicit, batch_size=4))


def test_resolve_rules():
    assert families.resolve("categorical", out_dim=3).C == 3
    assert families.resolve("poisson", out_dim=2).C == 2
    assert families.resolve("gaussian", {"sigma2": 0.5}, out_dim=2).C == 2
    assert families.resolve("bernoulli", out_dim=1).C == 1
    assert families.resolve("gaussian_meanvar", out_dim=2).out_dim == 2
    assert families.resolve("categorical").C == 10          # no model: the family's own default
    obj = families.get("categorical", C=3)
    assert families.resolve(obj, out_dim=3) is obj          # an object is returned unchanged
    assert [families.takes_size(n) for n in ("bernoulli", "categorical", "gaussian", "gaussian_meanvar",
                                              "poisson")] == [False, True, True, False, True]
    # the report / plan CLI (report --model, plan --model) go through the same function
    assert _model_family(None, None, 3).C == 3 and _model_family("poisson", None, 2).C == 2
    assert _model_family("categorical", {"C": 3}, 3).C == 3


def test_explicit_mismatch_raises_with_both_sizes_and_fix():
    m, x = _mlp(3), _x()
    with pytest.raises(ValueError, match=r"3 outputs.*expects 10.*C=10.*families.get\('categorical', C=3\)"):
        families.resolve("categorical", {"C": 10}, out_dim=3)
    with pytest.raises(ValueError, match=r"3 outputs.*expects 10.*families.get\('categorical', C=3\)"):
        families.resolve(families.get("categorical", C=10), out_dim=3)
    with pytest.raises(ValueError, match=r"3 outputs.*fixed output size 1"):
        families.resolve("bernoulli", out_dim=3)
    with pytest.raises(ValueError, match="parameters given together with a family instance"):
        families.resolve(families.get("categorical", C=3), {"C": 3})
    # an explicit family object of the wrong size is refused by the engines, naming both sizes
    with pytest.raises(ValueError, match=r"size 3.*expects 10"):
        conditional_stats(m, x, families.get("categorical", C=10))
    with pytest.raises(ValueError, match=r"3 outputs.*expects 10.*C=3"):
        check_model(m, "categorical", x, family_params={"C": 10}, progress=False, profile="quick",
                    properties=["closed_forms"])
    # a one-shot iterator cannot be peeked: refused with the fix
    with pytest.raises(ValueError, match=r"one-shot iterator.*families.get\('categorical', C=\.\.\.\)"):
        dataset_stats(m, iter([x[:3], x[3:]]), "categorical")
    # ... but an explicit family object needs no peeking
    _same(dataset_stats(m, iter([x[:3], x[3:]]), families.get("categorical", C=3)),
          dataset_stats(m, [x[:3], x[3:]], families.get("categorical", C=3)))


def test_estimators_api_infers_size():
    m, x = _mlp(3), _x()
    ests = ["squared_score", "exact_over_labels"]
    a, b = fe.analyse(m, x, "categorical", ests), fe.analyse(m, x, families.get("categorical", C=3), ests)
    assert a.C == b.C == 3
    for k, v in b.variance("squared_score").items():
        torch.testing.assert_close(a.variance("squared_score")[k], v, rtol=0, atol=0)
    va = fe.variance(m, x, "categorical", "squared_score")
    for k, v in b.variance("squared_score").items():
        torch.testing.assert_close(va[k], v, rtol=0, atol=0)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    s1 = fe.sample(m, x, "categorical", "squared_score", generator=g1)
    s2 = fe.sample(m, x, families.get("categorical", C=3), "squared_score", generator=g2)
    for k, v in s2.items():
        torch.testing.assert_close(s1[k], v, rtol=0, atol=0)


def test_check_model_infers_size():
    m, x = _mlp(3), _x(2)
    kw = dict(progress=False, profile="quick", properties=["closed_forms"], max_examples=1)
    r = check_model(m, "categorical", x, **kw)
    r_exp = check_model(m, families.get("categorical", C=3), x, **kw)
    assert r.ok and r_exp.ok
    assert r.ratios == r_exp.ratios


def test_cli_check_infers_size(capsys, monkeypatch):
    monkeypatch.chdir(HERE)
    args = ["check", "_user_models:resmlp", "--family", "categorical", "--examples", "1",
            "--properties", "closed_forms", "--profile", "quick", "--quiet"]
    code = main(args)           # 3 outputs, no --param C=3
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASSED" in out
    assert main(args + ["--param", "C=3"]) == 0
    assert capsys.readouterr().out.split("\n")[1:] == out.split("\n")[1:]
    code = main(args + ["--param", "C=10"])
    err = capsys.readouterr().err
    assert code != 0 and "3 outputs" in err and "expects 10" in err and "C=3" in err


def test_probe_refuses_batch_coupled_model_first():
    """The size probe runs no forward pass on a model the engines refuse (batch norm in training
    mode): the refusal is the engines' own, and the running statistics are left untouched."""
    m = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 3)).double()
    before = m[1].running_mean.clone()
    with pytest.raises(ValueError, match="Call model.eval"):
        conditional_stats(m, _x(), "categorical")
    assert torch.equal(m[1].running_mean, before)
