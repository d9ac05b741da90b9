"""``keys=`` of conditional_stats: only the requested keys, with the values of the full analysis."""
import pytest
import torch
from torch import nn

from fishersym import families
from fishersym.numeric import conditional_stats
from fishersym.numeric.stats import RESULT_KEYS


FAM = families.get("categorical", C=3)


def _cnn():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double()


@pytest.mark.parametrize("path", ["reverse", "generic"])
@pytest.mark.parametrize("keys", [("var1",), ("var2", "fisher_upper"), ("var1_lower_sharp", "rel_sd2"),
                                  ("prob_neg2",), ("rel_sd1",)])
def test_keys_subset_equals_full(path, keys):
    m, x = _cnn(), torch.randn(3, 1, 6, 6, dtype=torch.float64)
    full = conditional_stats(m, x, FAM,
                             path=path)
    part = conditional_stats(m, x, FAM, path=path, keys=keys)
    assert set(part.keys()) == set(keys) | {"fisher"}
    for k in set(keys) | {"fisher"}:
        for n in full[k]:
            torch.testing.assert_close(part[k][n], full[k][n], rtol=1e-13, atol=0, equal_nan=True)
    for g in full.groups:
        # every requested key that the full result has per group is there, with the same value
        assert {k for k in full.groups[g] if k in set(keys) | {"fisher"}} <= set(part.groups[g]), g
        for k, v in part.groups[g].items():
            torch.testing.assert_close(v, full.groups[g][k], rtol=1e-13, atol=0, equal_nan=True)


def test_keys_bad_input():
    m, x = _cnn(), torch.randn(2, 1, 6, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown result keys"):
        conditional_stats(m, x, "categorical", keys=["fischer"])
    with pytest.raises(ValueError, match="group_bounds"):
        conditional_stats(m, x, "categorical", keys=["var1"], group_bounds=True)
    assert "var1_upper_sharp_opt" in RESULT_KEYS
    # a key the options do not produce is an error naming the option, never silently dropped
    with pytest.raises(ValueError, match="optimised=True"):
        conditional_stats(m, x, FAM, keys=["var1_lower_opt"])
    with pytest.raises(ValueError, match="prob_negative=True"):
        conditional_stats(m, x, FAM, keys=["prob_neg2"], prob_negative=False)
    with pytest.raises(ValueError, match="sharpened=True"):
        conditional_stats(m, x, FAM, keys=["var2_lower_sharp"], sharpened=False)
    gauss = nn.Sequential(nn.Flatten(), nn.Linear(36, 1)).double()
    with pytest.raises(ValueError, match="shift-invariant"):
        conditional_stats(gauss, x, "gaussian", keys=["var2_lower_sharp"])
    with pytest.raises(ValueError, match="discrete families only"):
        conditional_stats(gauss, x, "gaussian", keys=["prob_neg2"])
