"""The float32 precision measurement (issue 13 items 6, 23; README "Guarantees").

``measured_v1_error`` re-analyses inputs in float64 on a copy of the model; it must report the
actual relative error of the float32 V₁ (here an error planted in the engine's output, so the
expected value is known exactly), and ``precision_lost`` must fire on it.
"""
import pytest
import torch
from torch import nn

from fishersym import families
from fishersym.numeric import conditional_stats
from fishersym.numeric.conditional import analyse_batch, select_engine
from fishersym.numeric.precision import check_inputs_count, measured_v1_error

FAM = families.get("categorical", C=3)


def _model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).float()


def test_measurement_finds_a_planted_error():
    model, x = _model(), torch.randn(6, 3, dtype=torch.float32)
    eng = select_engine(model, FAM)
    ba = analyse_batch(eng, model, x, FAM, 1)
    base = measured_v1_error(eng, model, x, FAM, ba.eng, k=6)
    assert base is not None and base < 1e-4                      # float32 rounding only
    part = ba.eng.parts["2.bias"]["nv1"]
    part.f.mul_(1.02)                                             # plant a 2 % error in one tensor
    got = measured_v1_error(eng, model, x, FAM, ba.eng, k=6)
    assert abs(got - 0.02) < 1e-3


def test_float32_results_carry_the_measurement_and_float64_do_not():
    model, x = _model(), torch.randn(4, 3, dtype=torch.float32)
    r32 = conditional_stats(model, x, FAM)
    assert r32.v1_rel_error_measured is not None and r32.v1_rel_error_measured < 1e-3
    assert conditional_stats(model, x, FAM, precision_check=0).v1_rel_error_measured is None
    r64 = conditional_stats(model.double(), x.double(), FAM)
    assert r64.v1_rel_error_measured is None


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_precision_check_validated(bad):
    with pytest.raises(ValueError, match="precision_check"):
        check_inputs_count(bad, 8)
