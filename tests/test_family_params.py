"""``family_params=`` in every entry point that takes a family with a model (issue 11 item 6):
a family given by name with parameters is the same analysis as the family object built from them,
and the size still comes from the model unless given."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import fishersym
import fishersym.estimators as fe
from fishersym import families
from fishersym.numeric import conditional_stats, dataset_stats
from fishersym.numeric.cost import cost_estimate
from fishersym.numeric.estimators import estimate
from fishersym.numeric.offdiag import offdiag_stats


def _model(out: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, out)).double().eval()


X = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
OBJ = families.get("gaussian", C=2, sigma2=0.5)          # what the name plus parameters must mean
PARAMS = {"sigma2": 0.5}                                  # C = 2 from the model


def _same(a, b):
    for k in b:
        for n in b[k]:
            torch.testing.assert_close(a[k][n], b[k][n], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("fn", [conditional_stats, dataset_stats])
def test_stats_entry_points(fn):
    m = _model()
    got = fn(m, X, "gaussian", family_params=PARAMS, progress=False)
    ref = fn(m, X, OBJ, progress=False)
    _same(got, ref)
    # the default σ² = 1 differs, so the parameters were really used
    other = fn(m, X, "gaussian", progress=False)
    assert not torch.equal(other["var1"]["0.weight"], ref["var1"]["0.weight"])


def test_estimator_entry_points():
    m = _model()
    a = fe.analyse(m, X, "gaussian", ["squared_score"], family_params=PARAMS)
    b = fe.analyse(m, X, OBJ, ["squared_score"])
    _same({"v": a.variance("squared_score")}, {"v": b.variance("squared_score")})
    _same({"v": fe.variance(m, X, "gaussian", "squared_score", family_params=PARAMS)},
          {"v": fe.variance(m, X, OBJ, "squared_score")})
    _same({"v": fe.mean(m, X, "gaussian", "squared_score", family_params=PARAMS)},
          {"v": fe.mean(m, X, OBJ, "squared_score")})
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    _same({"v": fe.sample(m, X, "gaussian", "squared_score", generator=g1, family_params=PARAMS)},
          {"v": fe.sample(m, X, OBJ, "squared_score", generator=g2)})
    p1 = fishersym.plan(m, X, "gaussian", target=0.5, family_params=PARAMS)
    p2 = fishersym.plan(m, X, OBJ, target=0.5)
    assert str(p1.groups) == str(p2.groups) and p1.estimators == p2.estimators


def test_numeric_helpers():
    m = _model()
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    _same({"e": estimate(m, X, "gaussian", generator=g1, family_params=PARAMS)},
          {"e": estimate(m, X, OBJ, generator=g2)})
    pairs = [(("0.weight", (0, 0)), ("0.weight", (1, 1)))]
    _same({"o": offdiag_stats(m, X, "gaussian", pairs, family_params=PARAMS)}, {"o": offdiag_stats(m, X, OBJ, pairs)})
    assert cost_estimate(m, X, "gaussian", calibrate=False, family_params=PARAMS).n_outputs == 2


def test_bad_family_params_are_clear_errors():
    m = _model(out=3)
    with pytest.raises(ValueError, match="3 outputs but the family expects 10"):
        conditional_stats(m, X, "categorical", family_params={"C": 10})
    with pytest.raises(TypeError, match="family_params must be a dict"):
        conditional_stats(m, X, "categorical", family_params=[("C", 3)])
    # a one-shot iterator cannot be peeked, but an explicit size needs no peeking
    r = dataset_stats(m, iter([X]), "categorical", family_params={"C": 3}, progress=False)
    assert r.info["n_inputs"] == 5
