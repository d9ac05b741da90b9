"""AnalysisOptions (issue 11 item 5): one options object from conditional_stats / dataset_stats through
analyse_batch to Engine.run, instead of keywords threaded through every layer."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fishersym import families
from fishersym.numeric import conditional_stats
from fishersym.numeric.conditional import AnalysisOptions, analyse_batch, select_engine


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    return model, families.get("categorical", C=3), torch.randn(5, 3, dtype=torch.float64)


def test_options_object_equals_keywords_and_reaches_the_engine():
    model, fam, x = _setup()
    eng = select_engine(model, fam)
    keys = frozenset({"fisher", "var1", "var1_upper"})
    opts = AnalysisOptions(sharpened=False, keys=keys, use_eig=False)
    a = analyse_batch(eng, model, x, fam, 2, opts)
    b = analyse_batch(eng, model, x, fam, 2, sharpened=False, keys=keys, use_eig=False)
    c = analyse_batch(eng, model, x, fam, 2, AnalysisOptions(), sharpened=False, keys=keys, use_eig=False)
    for ba in (b, c):
        assert ba.keys.keys() == a.keys.keys() and ba.sharp is None and a.sharp is None
        for name, d in a.keys.items():
            assert set(d) == set(ba.keys[name]) == {"fisher", "var1", "var1_upper"}
            for k, part in d.items():
                assert torch.equal(part.materialize(), ba.keys[name][k].materialize())
    # the options reach Engine.run: the generic path's size limit comes from them
    gen = select_engine(model, fam, path="generic")
    with pytest.raises(ValueError, match="limit of 5"):
        analyse_batch(gen, model, x, fam, 1, AnalysisOptions(max_params=5))
    with pytest.raises(ValueError, match="limit of 5"):
        gen.run(model, x, fam, AnalysisOptions(max_params=5))
    # and the public function builds the same object: the same numbers
    r = conditional_stats(model, x, fam, n_samples=2, sharpened=False, keys=keys, use_eig=False)
    assert torch.equal(r["var1_upper"]["0.weight"], a.keys["0.weight"]["var1_upper"].materialize())


def test_bad_options_name_the_problem():
    model, fam, x = _setup()
    eng = select_engine(model, fam)
    with pytest.raises(TypeError, match="unexpected keyword argument 'optimise'"):
        analyse_batch(eng, model, x, fam, 1, optimise=True)
    with pytest.raises(TypeError, match="options must be an AnalysisOptions, got dict"):
        analyse_batch(eng, model, x, fam, 1, {"optimised": True})
    with pytest.raises(AttributeError):
        AnalysisOptions().optimised = True          # frozen: one object per analysis, never mutated
