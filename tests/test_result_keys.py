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
                                  ("prob_neg2",)])
def test_keys_subset_equals_full(path, keys):
    m, x = _cnn(), torch.randn(3, 1, 6, 6, dtype=torch.float64)
    full = conditional_stats(m, x, FAM,
                             path=path)
    part = conditional_stats(m, x, FAM, path=path, keys=keys)
    assert set(part.keys()) == set(keys) | {"fisher"}
    for k in set(keys) | {"fisher"}:
        for n in full[k]:
            torch.testing.assert_close(part[k][n], full[k][n], rtol=1e-13, atol=0, equal_nan=True)
    for g in part.groups:
        for k, v in part.groups[g].items():
            if k in full.groups[g]:
                torch.testing.assert_close(v, full.groups[g][k], rtol=1e-13, atol=0, equal_nan=True)


def test_keys_bad_input():
    m, x = _cnn(), torch.randn(2, 1, 6, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown result keys"):
        conditional_stats(m, x, "categorical", keys=["fischer"])
    with pytest.raises(ValueError, match="group_bounds"):
        conditional_stats(m, x, "categorical", keys=["var1"], group_bounds=True)
    assert "var1_upper_sharp_opt" in RESULT_KEYS
